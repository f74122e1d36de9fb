"""``asa-study``: does pretraining help on my data? The command (`study`, `settings`), the arms (`arms`), the plan
and its cohort (`plan`, `cohort`), the checks, the stages and their scheduler, the readout, the fine-tuning grid and
its tables (`transfer`, `tables`), the reading rules (`readings`), the page (`report`) and its `statistics`."""
