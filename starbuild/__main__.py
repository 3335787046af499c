from starbuild.cli.main import main

main()
