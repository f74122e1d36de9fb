"""``asa-study``: does pretraining help on my data? The command and its settings, arms, plan, cohort, checks, stages,
scheduler, readout, fine-tuning grid (`transfer`) and tables, reading rules, page (`report`) and statistics."""
