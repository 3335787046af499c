from starbuild.cli import main

main()
