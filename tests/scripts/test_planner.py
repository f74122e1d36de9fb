"""asa-plan: the planner's arithmetic against hand-computed values, and its device profiles."""

from __future__ import annotations

import json

import pytest

from asa.planning import (GIB, DeviceProfile, bytes_per_case, plan_run, profile_from_json,
                               profile_from_markdown, samples_per_s_estimate)
from asa.cli.plan import main

PAPER = dict(volumes=11993, epochs=400, batch=24, gpus=4)
BOX_BYTES = 144 * 176 * 144 * 3  # fp16 image + uint8 mask = 10,948,608 bytes


def test_paper_setting_by_hand():
    plan = plan_run(DeviceProfile(800.0, 60.0), case_bytes=BOX_BYTES, **PAPER)
    # floor(floor(11993 / 4) / 24) = floor(2998 / 24) = 124 steps; 400 · 124 · 24 / 800 = 1488 s
    assert plan.steps_per_epoch == 124 and plan.wall_s == pytest.approx(1488.0)
    assert plan.gpu_hours == pytest.approx(1488.0 * 4 / 3600)
    assert plan.store_bytes == 11993 * 10_948_608 == plan.page_cache_bytes
    assert plan.workers_needed_per_gpu == 14  # ceil(800 / 60)
    assert plan.limit == "GPU step" and plan.samples_per_s_per_gpu == 800.0


def test_too_few_workers_limit():
    plan = plan_run(DeviceProfile(800.0, 60.0), case_bytes=BOX_BYTES, workers_per_gpu=8, **PAPER)
    # 8 workers · 60 = 480 crops/s < 800: 400 · 124 · 24 / 480 = 2480 s
    assert plan.limit == "loader workers" and plan.loader_rate_per_gpu == 480.0
    assert plan.wall_s == pytest.approx(2480.0) and plan.gpu_hours == pytest.approx(2480.0 * 4 / 3600)
    enough = plan_run(DeviceProfile(800.0, 60.0), case_bytes=BOX_BYTES, workers_per_gpu=14, **PAPER)
    assert enough.limit == "GPU step" and enough.wall_s == pytest.approx(1488.0)


def test_store_beyond_the_page_cache_reads_cold():
    profile = DeviceProfile(800.0, 60.0, cold_crops_per_worker=20.0)
    plan = plan_run(profile, case_bytes=BOX_BYTES, workers_per_gpu=8, ram_bytes=64 * GIB, **PAPER)
    # 122.3 GiB > 64 GiB: 8 · 20 = 160 crops/s; 400 · 124 · 24 / 160 = 7440 s; ceil(800 / 20) = 40 workers
    assert plan.wall_s == pytest.approx(7440.0) and plan.workers_needed_per_gpu == 40
    assert plan.limit.startswith("loader workers (cold reads")
    fits = plan_run(profile, case_bytes=BOX_BYTES, workers_per_gpu=8, ram_bytes=256 * GIB, **PAPER)
    assert fits.wall_s == pytest.approx(2480.0)


def test_estimates_and_bad_input():
    # 989 TFLOP/s · 0.4 / 494 GFLOP = 800.8 samples/s
    assert samples_per_s_estimate(494e9, 989.0, 0.4) == pytest.approx(989e12 * 0.4 / 494e9)
    assert bytes_per_case((10, 20, 30), channels=4, image_bytes=2) == 6000 * 9
    with pytest.raises(ValueError, match="no full step"):
        plan_run(DeviceProfile(1.0, 1.0), volumes=10, epochs=1, batch=8, gpus=2, case_bytes=1)
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_run(DeviceProfile(1.0, 1.0), volumes=10, epochs=0, batch=1, gpus=1, case_bytes=1)


def test_profiles_from_benchmark_files(tmp_path):
    md = tmp_path / "B.md"
    md.write_text(
        "| date | device | size | batch | samples/s | load |\n| --- | --- | ---: | ---: | ---: | ---: |\n"
        "| 2026-01-01 | NVIDIA H100 | 128³ | 24 | 700.00 | 0.1 |\n| 2026-01-02 | NVIDIA H100 | 128³ | 24 | 750.00 | 0.1 |\n"
        "| 2026-01-02 | AMD EPYC | 128³ | 2 | 0.30 | 1.0 |\n\n"
        "| date | device | cpus | store crops/s/worker warm (cold) | command |\n| --- | --- | --- | --- | --- |\n"
        "| 2026-01-03 | NVIDIA H100 host | 32 | 95.5 (30.5) | `x` |\n")
    got = profile_from_markdown(md, "h100")
    assert got["samples_per_s"] == 750.0 and got["batch"] == 24
    assert got["crops_per_worker"] == 95.5 and got["cold_crops_per_worker"] == 30.5
    with pytest.raises(ValueError, match="no row"):
        profile_from_markdown(md, "A100")
    loader = tmp_path / "l.json"
    loader.write_text(json.dumps({"store_warm_crops_per_s_per_worker": 61.0, "store_cold_crops_per_s_per_worker": 12.0,
                                  "store_bytes": 2000, "volumes": 4}))
    assert profile_from_json(loader) == {"crops_per_worker": 61.0, "cold_crops_per_worker": 12.0, "case_bytes": 500.0}


def test_console_script_prints_the_plan(tmp_path, capsys):
    argv = ["--volumes", "11993", "--epochs", "400", "--batch", "24", "--gpus", "4", "--flops-per-sample", "494e9",
            "--peak-tflops", "989", "--utilization", "0.4", "--crops-per-worker", "60", "--workers-per-gpu", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 800.8 samples/s estimated, 8 · 60 = 480 crops/s per GPU: 400 · 124 · 24 / 480 s = 0.69 h
    assert "wall time            0.69 h (41 min)" in out and "GPU-hours            2.8" in out
    assert "limited by           loader workers" in out and "14 per GPU" in out
    assert "store on disk        122.3 GiB" in out and "estimate: 989 TFLOP/s" in out
    assert main(["--volumes", "10", "--epochs", "1", "--batch", "2"]) == 2
    assert "lacks --samples-per-s" in capsys.readouterr().err
