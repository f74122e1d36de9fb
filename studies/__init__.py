"""The studies of the checkout, kept out of the installed ``asa`` package, each run from the repository root:

- ``python -m studies.pretraining``: the SW-ViT's Table 4 study in one resumable command on asa's own demo subjects:
  cohort -> Table 4 pretraining arms -> the transfer study -> one report.

The study over a researcher's own data is installed with the package: ``asa-study`` (`asa.study`), whose fine-tuning
grid (`asa.study.transfer`) and shared parts (`asa.study.common`) this one drives. Like ``benchmarks/`` it sits
above the whole library: it may drive any of ``asa``, and nothing in ``asa`` imports it (``tests/test_layers.py``)."""
