from sgpo_data_cli.app import main

main()
