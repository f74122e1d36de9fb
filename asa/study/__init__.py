"""``asa-study``: does pretraining help on my data? The study over a researcher's own pretraining cohort and labeled
set (`asa.study.study`: the plan, the checks, the units and their signals), the fine-tuning grid it hands its
arms to (`asa.study.transfer`, also ``python -m asa.study.transfer`` on its own), the negative control's noise
volumes (`asa.study.noise`), the report (`asa.study.report`) and what they share (`asa.study.common`)."""
