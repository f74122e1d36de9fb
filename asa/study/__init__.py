"""``asa-study``: does pretraining help on my data? The study over a researcher's own pretraining cohort and labeled
set: the command (`asa.study.study`), its plan (`asa.study.plan`, its pretraining cohort `asa.study.cohort`), the
checks before anything trains (`asa.study.checks`), the one scheduler of its units and their signals
(`asa.study.scheduler`), what it reads off finished units (`asa.study.readout`), the fine-tuning grid it hands its
arms to (`asa.study.transfer`, run in-process) and its tables (`asa.study.tables`), the negative control's noise
volumes (`asa.study.noise`), the report (`asa.study.report`) and its statistics (`asa.study.statistics`), and what
they share (`asa.study.common`)."""
