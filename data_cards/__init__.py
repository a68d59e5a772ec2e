"""Dataset-card templates, installed as the `sgpo_data_cards` package so wheels carry them."""
