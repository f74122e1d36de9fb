"""benchmarks/speed.py --region-attention: a tiny run yields consistent keys and ratios."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("asa_benchmark_region", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_region_attention_run(tmp_path):
    bench = _load()
    out = tmp_path / "r.json"
    args = ["--region-attention", "--size", "32", "--preset", "tiny", "--batch", "1", "--steps", "1", "--warmup", "0",
            "--threads", "1", "--amp", "off", "--device", "cpu", "--json", str(out)]
    assert bench.main(args) == 0
    r = json.loads(out.read_text())
    assert r["tokens"] == 64 and r["chunk"] == 8 and r["amp"] == "fp32" and r["regions"] >= 2
    assert r["rmsa_max_abs_diff_vs_dense"] < 1e-4
    for name in ("rmsa", "rmsa_dense", "lw_msa"):
        assert r[f"{name}_step_s"] > 0 and r[f"{name}_peak_mib"] > 0 and len(r["times"][name]) == 1
    assert math.isclose(r["rmsa_vs_dense_speedup"], r["rmsa_dense_step_s"] / r["rmsa_step_s"])
    assert math.isclose(r["rmsa_vs_lw_memory"], r["rmsa_peak_mib"] / r["lw_msa_peak_mib"])
    regions = bench.phantom_regions(32)
    assert regions.shape == (1, 64) and regions.dtype == torch.int64 and int(regions.min()) == 0
