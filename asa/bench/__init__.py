"""Measuring and planning: the timing harness of ``scripts/benchmark.py`` (alternated workloads, peak
memory, FLOP counts) and its report (targets, tables, BENCHMARKS.md rows), the data-loader
workload, the GPU check (``python -m asa.bench.gpu``) and the compute planner behind ``asa-plan``.
It sits above the API and below the console scripts: it may drive the whole stack, and only
``asa.cli`` imports it."""
