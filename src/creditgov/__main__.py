from creditgov.cli import main

main()
