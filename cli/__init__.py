"""The `sgpo-data` command line (installed as the `sgpo_data_cli` package)."""
