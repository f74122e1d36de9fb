"""Measuring tools of the checkout, kept out of the installed ``asa`` package: the timing harness of
``benchmarks/speed.py`` (alternated workloads, peak memory, FLOP counts) and its report (targets,
tables, BENCHMARKS.md rows), the data-loader workload, the old-vs-new step comparison, the SDPA
kernel census and the GPU check (``python -m benchmarks.gpu``, from the repository root).

They sit above the whole library and beside ``scripts/``: they may drive any of ``asa``, and
nothing in ``asa`` imports them (``tests/test_layers.py``). The compute planner behind ``asa-plan``
stays in the library (``asa.planning``)."""
