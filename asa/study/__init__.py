"""``asa-study``: does pretraining help on my data? The study over a researcher's own pretraining cohort and labeled
set: the command (`asa.study.study`) and its settings (`asa.study.settings`), its arms, each declared once
(`asa.study.arms`), its plan (`asa.study.plan`, its pretraining cohort `asa.study.cohort`), the checks before
anything trains (`asa.study.checks`), its stages (`asa.study.stages`) and the one scheduler of their units
(`asa.study.scheduler`), what it reads off finished units (`asa.study.readout`), the fine-tuning grid of the pilot
and the transfer stage (`asa.study.transfer`) and its tables (`asa.study.tables`), the reading rules (`asa.study.readings`), the page (`asa.study.report`) and its
statistics (`asa.study.statistics`), and what they share (`asa.study.common`)."""
