"""``asa-study``: does pretraining help on my data? Its command, arms, plan, stages, scheduler, readings and page."""
