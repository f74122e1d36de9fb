"""The studies of the checkout, kept out of the installed ``asa`` package, each run from the repository root:

- ``python -m studies.transfer``: does pretraining help? Fine-tune arms over N labeled cases × seeds, test on
  one fixed split, paired differences with seed × case bootstrap CIs.
- ``python -m studies.pretraining``: the whole study in one resumable command: cohort -> Table 4 pretraining
  arms -> the transfer study -> one report.
- ``python -m studies.resenc``: which of ASA's ideas help a residual-encoder U-Net, with a pure-noise negative
  control (``studies.noise``) and a supervised positive control.

What they share (the command line of a scale, the settings record, the time budget, the report's tables) is
``studies.common``. Like ``benchmarks/`` they sit above the whole library: they may drive any of ``asa``, and
nothing in ``asa`` imports them (``tests/test_layers.py``)."""
