from starbuild.cli.fastpath import entry

entry()
