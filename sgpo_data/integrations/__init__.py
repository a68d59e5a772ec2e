"""The SGPO reward inside other trainers: TRL's GRPOTrainer (`integrations.trl`), verl (`integrations.verl`)."""
