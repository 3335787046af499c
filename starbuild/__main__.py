from starbuild.cli.fastpath import run

run()
