"""The benchmark on a GPU that is too small for a model: the out-of-memory point is searched and
recorded, and the rows and tables say at which batch each model ran."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import report
from benchmarks.harness import Workload, fits, halvings, largest_fitting

CPU = torch.device("cpu")


def _workload(batch: int, limit: int, runs: list[int]) -> Workload:
    def run() -> None:
        runs.append(batch)
        if batch > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {batch})")

    return Workload(f"w{batch}", run)


def test_halvings_end_at_one():
    assert halvings(24) == [24, 12, 6, 3, 1] and halvings(1) == [1] and halvings(5) == [5, 2, 1]


@pytest.mark.parametrize("limit, expected", [(30, (24, None)), (7, (6, 12)), (2, (1, 3)), (0, (None, 1))])
@pytest.mark.slow
def test_largest_fitting_batch_and_the_oom_point(limit, expected):
    runs: list[int] = []
    w, batch, too_big = largest_fitting(lambda b: _workload(b, limit, runs), 24, CPU, probe=True)
    assert (batch, too_big) == expected
    assert (w is None) is (batch is None) and (w is None or w.name == f"w{batch}")
    assert runs == [b for b in halvings(24) if b >= (batch or 0)][: len(runs)]  # tried from the top, stopped at the fit


def test_only_an_out_of_memory_error_means_too_big():
    def broken() -> None:
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        fits(Workload("bug", broken), CPU, probe=True)
    assert fits(Workload("never run", broken), CPU)  # on a CPU nothing is probed (no OOM to catch there)


@pytest.fixture(scope="module")
def benchmark():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("asa_benchmark_oom", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_monai_mae_that_does_not_fit_is_measured_at_a_smaller_batch(benchmark, tmp_path, monkeypatch):
    """MONAI's MAE 'runs out of memory' above batch 1 (as its global attention does at 128³, batch 24
    on a GPU): it is timed at batch 1, the speedup compares samples/s, and the row says so."""
    real = benchmark.largest_fitting

    def oom_above_one(build, batch, device, probe=None):
        def limited(b: int) -> Workload:
            w = build(b)
            if b > 1:
                w.run = _workload(b, 1, []).run
            return w

        return real(limited, batch, device, probe=True)

    monkeypatch.setattr(benchmark, "largest_fitting", oom_above_one)
    out = tmp_path / "b.json"
    assert benchmark.main(["--size", "32", "--preset", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0",
                           "--threads", "1", "--amp", "off", "--parts", "pretrain", "--device", "cpu",
                           "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["monai_mae_oom_batch"] == 2 and r["monai_mae_batch"] == 1 and r["parts"] == ["pretrain"]
    assert r["speedup_vs_monai_mae"] == pytest.approx(r["asa_samples_per_s"] / r["monai_mae_samples_per_s"])
    assert r["monai_mae_samples_per_s"] == pytest.approx(1 / r["monai_mae_step_s"])
    assert "asa_finetune_step_s" not in r and "case_inference_s" not in r
    row = report.parse_markdown_row(report.markdown_row(r), _header())
    assert row["vs MAE"].endswith("(MAE batch 1)") and row["FT vs UNETR"] == row["case s"] == "-"
    assert "(MONAI at batch 1, out of memory at 2)" in report.format_table(r)


def _header() -> str:
    return next(line for line in report.MD_HEADER.splitlines() if line.startswith("| date |"))


def test_a_row_parses_back_into_its_columns():
    r = {"date": "2026-11-22T10:00:00+00:00", "device_name": "NVIDIA H100 | 80GB", "torch_version": "2.13.0",
         "amp": "fp16", "size": 128, "batch": 24, "preset": "base", "asa_step_s": 0.25, "asa_samples_per_s": 96.0,
         "matmul_frac": 0.45, "ar_weights_fraction": 0.01, "asa_pretrain_peak_mib": 20480.0,
         "fp16_speedup": 2.5, "command": "python -m benchmarks.gpu --out x"}
    row = report.parse_markdown_row(report.markdown_row(r), _header())
    assert row["device"] == "NVIDIA H100 | 80GB"  # the escaped pipe stays in its cell
    assert row["bf16×"] == "2.50" and row["matmul frac (MAE)"] == "0.45" and row["peak GiB ASA / MAE"] == "20.00 / -"
    assert row["vs MAE"] == row["load"] == "-" and row["command"] == "`python -m benchmarks.gpu --out x`"
    with pytest.raises(ValueError, match="cells"):
        report.parse_markdown_row("| a | b |", _header())
