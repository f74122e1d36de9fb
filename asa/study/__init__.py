"""``asa-study``: does pretraining help on my data? Its command, arms, runs, stages, scheduler, readings and page."""
