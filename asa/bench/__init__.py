"""The measuring side of ``scripts/benchmark.py``: a timing harness (alternated workloads, peak
memory, FLOP counts) and the report (targets, tables, BENCHMARKS.md rows). Imports only the bottom
I/O layer of ``asa``, so the workloads being measured stay in the script."""
