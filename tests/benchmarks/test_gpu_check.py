"""The GPU check's dry run (every part at toy sizes on the CPU, gloo for NCCL) writes its three
files with every part's figures, and its BENCHMARKS.md rows parse; its runner records a command
that fails or outlives its limit instead of stopping."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import gpu
from benchmarks.gpu_parts import PROFILES, gpu_test_files, run_command
from benchmarks.report import MD_HEADER, parse_markdown_row

REPO = Path(__file__).resolve().parents[2]
HEADER = next(line for line in MD_HEADER.splitlines() if line.startswith("| date |"))


def _dry_run(folder: Path) -> None:
    """The dry run's files in ``folder / "out"``, its exit code in ``folder / "code"``."""
    out = folder / "out"
    out.mkdir(parents=True)
    # the 450 s default budget is the GPU's 9 minutes; on a loaded CPU the toy parts may take longer
    code = gpu.main(["--out", str(out), "--dry-run", "--repo", str(REPO), "--work", str(out / "work"),
                     "--budget", "1200"])
    (folder / "code").write_text(str(code))


@pytest.fixture(scope="module")
def dry_run(built_once):
    # once in the run: work stealing may hand this module's two tests to both workers, each setting it up
    folder = built_once("gpu-check", _dry_run)
    out = folder / "out"
    return int((folder / "code").read_text()), out, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow  # several processes: pytest, torchrun (two runs)
@pytest.mark.timeout(1500)  # the dry run (the fixture) counts towards the first test that uses it
def test_the_dry_run_passes_every_part_and_writes_its_files(dry_run):
    code, out, summary = dry_run
    failed = {k: v.get("error") for k, v in summary["parts"].items() if v["status"] != "ok"}
    assert code == 0 and summary["ok"], failed
    assert summary["dry_run"] and set(summary["parts"]) == {"prepare", *gpu.ORDER}
    for key in ("device_name", "torch_version", "cuda_version", "date", "command", "git_commit"):
        assert key in summary["machine"]
    assert summary["machine"]["command"].startswith("python -m benchmarks.gpu --out")
    parts = summary["parts"]
    tests = parts["cuda_tests"]
    assert tests["tests"] > 10 and tests["skipped"] == tests["tests"]  # every CUDA test collected, skipped on a CPU
    for name in ("benchmark_fp16", "benchmark_bf16"):
        r = parts[name]["results"]
        assert r["size"] == 32 and r["preset"] == "tiny" and r["parts"] == ["pretrain"]
        assert r["asa_samples_per_s"] > 0 and r["matmul_frac"] > 0 and r["asa_pretrain_peak_mib"] > 0
        assert r["speedup_vs_monai_mae"] > 0 and r["monai_mae_batch"] == r["batch"]
        assert r["matmul_size"] == PROFILES["dry"].matmul_size  # the dry profile's, not the 4096 of a CPU run
    assert parts["benchmark_bf16"]["results"]["bf16_speedup"] > 0
    ft = parts["finetune"]["results"]
    assert ft["finetune_speedup_vs_unetr"] > 0 and ft["finetune_speedup_vs_swin_unetr"] > 0
    assert ft["inference_speedup_vs_unetr"] > 0
    assert ft["inference_volume"] == ft["size"] == 64  # one window, the fine-tuning crop (SwinUNETR needs 64)
    pre = parts["pretrain_torchrun"]
    assert pre["backend"] == "gloo" and pre["world_size"] == 1
    assert 0 < pre["stopped_at"] == pre["resumed_at"] < pre["finished_at"] == 24
    assert pre["loss_last"] < pre["loss_first"] and pre["samples_per_s"] > 0
    case = parts["predict_case"]
    assert case["case_shape"] == [40, 40, 36] and case["predict_s"] >= case["case_inference_s"] > 0
    assert case["sw_batch_size_auto"] == 1  # one window per batch on a CPU
    assert {"lw_msa_off", "rmsa_off", "saca_off"} <= set(parts["sdpa"])
    assert all(part["seconds"] > 0 for part in parts.values())
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["benchmarks_row.md", "gpu_check.json",
                                                                    "gpu_check.log"]
    log = (out / "gpu_check.log").read_text()
    assert "received SIGTERM: saving last.pt" in log and "asa GPU check: every part passed" in log


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_rows_parse_and_append_to_benchmarks_md(dry_run, tmp_path):
    _, out, summary = dry_run
    lines = [line for line in (out / "benchmarks_row.md").read_text().splitlines() if line.startswith("|")]
    assert len(lines) == 2 and lines == summary["rows"]
    fp32, bf16 = (parse_markdown_row(line, HEADER) for line in lines)
    assert (fp32["amp"], bf16["amp"]) == ("fp32", "bf16") and fp32["size"] == "32³" and fp32["preset"] == "tiny"
    assert fp32["FT vs UNETR"] != "-" and bf16["FT vs UNETR"] == "-"  # the fine-tune part ran at the first precision
    # asa-predict's amp=auto: bf16 on a CPU with native bf16, fp32 on one without; its time is in that row only
    rows, case_amp = {"fp32": fp32, "bf16": bf16}, summary["parts"]["predict_case"]["amp"]
    assert [amp for amp, row in rows.items() if row["case s"] != "-"] == [case_amp]
    assert bf16["bf16×"] != "-"
    assert fp32["command"].startswith("`python -m benchmarks.gpu")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text((REPO / "BENCHMARKS.md").read_text())
    assert gpu.main(["--rows", str(out / "gpu_check.json"), "--append-md", str(md)]) == 0
    table = md.read_text().splitlines()
    at = table.index(lines[0])
    assert table[at + 1] == lines[1] and table[at - 1].startswith("| 20")  # below the last row of the results table


def test_every_gpu_test_file_is_found():
    files = gpu_test_files(REPO)
    assert "tests/gpu/test_cuda_paths.py" in files and "tests/gpu/test_training_paths.py" in files
    assert "tests/train/test_distributed.py" in files  # a parametrised CUDA case counts
    assert "tests/bench/test_gpu_check.py" not in files


def test_a_command_that_fails_or_outlives_its_limit_is_recorded(tmp_path):
    log = tmp_path / "log"
    assert run_command([sys.executable, "-c", "print('hi')"], timeout_s=60, log_path=log)[:2] == ("ok", 0)
    status, code, _ = run_command([sys.executable, "-c", "raise SystemExit(3)"], timeout_s=60, log_path=log)
    assert (status, code) == ("failed", 3)
    status, code, seconds = run_command([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1,
                                        log_path=log)
    assert (status, code) == ("timeout", None) and seconds < 30
    assert "hi" in log.read_text()


def test_a_part_that_raises_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("injected")

    monkeypatch.setitem(gpu.PARTS, "sdpa", boom)
    monkeypatch.setitem(gpu.PARTS, "benchmark_bf16", lambda ctx: {"x": 1.0, "checks": {"fine": False}})
    summary = gpu.run_check(tmp_path / "out", dry_run=True, budget_s=60, repo=REPO, parts=["sdpa", "benchmark_bf16"])
    assert summary["parts"]["sdpa"]["status"] == "error" and "injected" in summary["parts"]["sdpa"]["error"]
    assert summary["parts"]["benchmark_bf16"]["status"] == "failed"
    assert "checks failed: fine" in summary["parts"]["benchmark_bf16"]["error"]
    assert not summary["ok"] and summary["rows"] == []
    assert "no benchmark part finished" in (tmp_path / "out" / "benchmarks_row.md").read_text()


def test_a_part_left_without_time_in_the_budget_is_skipped_and_recorded(tmp_path):
    summary = gpu.run_check(tmp_path / "out", dry_run=True, budget_s=5, repo=REPO, parts=["sdpa"])
    assert summary["parts"]["sdpa"]["status"] == "skipped" and "left of the 5 s budget" in summary["parts"]["sdpa"]["error"]
    assert not summary["ok"]


def test_a_part_stopped_from_outside_stops_what_it_started(tmp_path):
    """A timed-out part gets SIGTERM; its handler kills the process groups it started (pytest,
    torchrun and their workers), so nothing keeps running on the GPU into the next part."""
    from benchmarks.gpu_parts import reap, spawn, stop_started

    with open(tmp_path / "log", "w") as log:
        proc = spawn([sys.executable, "-c", "import subprocess, sys, time; "
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"],
                     stdout=log)
    with pytest.raises(SystemExit) as stopped:
        stop_started()
    assert stopped.value.code == 143
    assert reap(proc) == -9
