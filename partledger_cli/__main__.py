from partledger_cli.main import main

main()
