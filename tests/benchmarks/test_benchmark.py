"""benchmarks/speed.py: one tiny run yields every key, consistent ratios, a Markdown row."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.harness import PeakMemory
from asa.train.precision import cpu_has_native_bf16

pytestmark = pytest.mark.slow  # the benchmark runs real training steps

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
_spec = importlib.util.spec_from_file_location("asa_benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = benchmark  # dataclasses look their module up
_spec.loader.exec_module(benchmark)

# one thread: on a loaded 2-core machine two threads stall at every op. bf16 only where the CPU has it:
# emulated bf16 (no avx512_bf16 / amx_bf16) is many times slower than fp32 and took the fixture past the
# pytest timeout on such a CPU; the fp32 run checks every key but the bf16-only ones
BF16 = cpu_has_native_bf16()
AMP = "bf16" if BF16 else "fp32"
TINY = ["--size", "32", "--preset", "tiny", "--batch", "1", "--steps", "1", "--warmup", "0", "--threads", "1",
        "--amp", "bf16" if BF16 else "off", "--case-shape", "40", "40", "36", "--matmul-size", "512"]
POSITIVE = [
    "asa_step_s", "monai_mae_step_s", "speedup_vs_monai_mae", "asa_samples_per_s",
    "asa_step_flops", "monai_mae_step_flops", "matmul_flops_per_s", "matmul_frac", "monai_mae_matmul_frac",
    "ar_weights_s", "ar_weights_fraction",
    "asa_finetune_step_s", "unetr_finetune_step_s", "finetune_speedup_vs_unetr",
    "asa_inference_s", "unetr_inference_s", "inference_speedup_vs_unetr",
    "asa_pretrain_peak_mib", "monai_mae_peak_mib", "asa_finetune_peak_mib", "unetr_finetune_peak_mib",
    "asa_inference_peak_mib", "unetr_inference_peak_mib",
    "loader_crops_per_s", "loader_headroom",
    "case_inference_s", "case_inference_peak_mib",
    "case_inference_contiguous_s", "case_inference_contiguous_peak_mib",
] + (["asa_fp32_step_s", "bf16_speedup"] if BF16 else [])
FACTS = ["device", "device_name", "torch_version", "monai_version", "date", "command", "unetr_note"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    md = out / "BENCHMARKS.md"
    assert benchmark.main([*TINY, "--device", "cpu", "--json", str(out / "b.json"), "--append-md", str(md)]) == 0
    r = json.loads((out / "b.json").read_text())
    no_loader = {k: v for k, v in r.items() if not k.startswith(("loader_", "bf16", "case_"))}
    benchmark.append_markdown(no_loader, md)  # a second run, as --skip-loader leaves it
    return r, md


def test_every_key_positive_and_finite(tiny_run):
    r, _ = tiny_run
    for key in POSITIVE:
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, (key, r.get(key))
    for key in FACTS:
        assert isinstance(r[key], str) and r[key], key
    assert r["torch_version"] == torch.__version__
    assert r["size"] == 32 and r["batch"] == 1 and r["preset"] == "tiny"
    assert r["amp"] == AMP and r["threads"] == 1 and "(1 thread)" in r["device_name"]
    assert r["case_shape"] == [40, 40, 36] and len(r["times"]["case_inference"]) == 1
    assert len(r["times"]["case_inference_contiguous"]) == 1
    assert r["command"].startswith("benchmarks/speed.py --size 32")
    assert len(r["times"]["asa"]) == 1 and len(r["times"]["monai_mae"]) == 1
    assert r["inference_volume"] == 48  # 1.5 × size


def test_ratios_are_those_of_the_recorded_times(tiny_run):
    r, _ = tiny_run
    assert r["speedup_vs_monai_mae"] == pytest.approx(r["monai_mae_step_s"] / r["asa_step_s"])
    assert r["finetune_speedup_vs_unetr"] == pytest.approx(r["unetr_finetune_step_s"] / r["asa_finetune_step_s"])
    assert r["inference_speedup_vs_unetr"] == pytest.approx(r["unetr_inference_s"] / r["asa_inference_s"])
    assert r["ar_weights_fraction"] == pytest.approx(r["ar_weights_s"] / r["asa_step_s"])
    assert r["loader_headroom"] == pytest.approx(r["loader_crops_per_s"] / r["asa_samples_per_s"])
    if BF16:
        assert r["bf16_speedup"] == pytest.approx(r["asa_fp32_step_s"] / r["asa_step_s"])
        assert r["asa_fp32_step_s"] == r["times"]["asa_fp32"][0]
    else:  # an fp32 run times no second precision
        assert "bf16_speedup" not in r and "asa_fp32" not in r["times"]
    assert r["matmul_frac"] == pytest.approx(r["asa_step_flops"] / r["asa_step_s"] / r["matmul_flops_per_s"])
    assert r["mfu"] is None and r["datasheet_peak_flops_per_s"] is None  # a CPU: no datasheet peak
    # each timed list holds one step; the medians are those steps
    assert r["asa_step_s"] == r["times"]["asa"][0]
    assert r["matmul_size"] == 512  # --matmul-size (4096 by default on a CPU: seconds on one thread)
    assert r["matmul_flops_per_s"] == pytest.approx(2 * 512**3 / r["times"]["matmul"][0])  # in the run's precision


def test_flops_count_the_model(tiny_run):
    """FLOPs of fwd + bwd are about 3× the forward's matmul FLOPs; ASA's linear layers alone give a floor."""
    r, _ = tiny_run
    p = benchmark.PRESETS["tiny"]
    visible = round(0.25 * 64)  # 32³ / 8³ = 64 tokens, 75 % masked
    enc = visible * p["depth"] * 2 * 12 * p["embed_dim"] ** 2  # qkv + proj + MLP: 12·C² MACs per token
    dec = 64 * p["decoder_depth"] * 2 * 12 * p["decoder_dim"] ** 2
    assert r["asa_step_flops"] >= 3 * (enc + dec)


def test_markdown_header_once_then_one_row_per_run(tiny_run):
    _, md = tiny_run
    text = md.read_text()
    assert text.startswith("# Benchmarks")
    assert text.count("| date | device |") == 1
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    header = [c.strip() for c in text.split("| date |")[1].splitlines()[0].strip("|").split("|")]
    assert len(cells) == len(header) + 1
    assert cells[3] == AMP and cells[4] == "32³" and cells[6] == "tiny" and cells[-1].startswith("`benchmarks/speed.py")
    assert cells[15] == (f"{tiny_run[0]['bf16_speedup']:.2f}" if BF16 else "-")
    assert cells[16] == f"{tiny_run[0]['case_inference_s']:.1f}"
    second = [c.strip() for c in rows[1].strip("|").split("|")]
    assert second[15:18] == ["-", "-", "-"]  # no bf16 timing, no case, no loader in the second run


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(16 * 2**20)  # 64 MiB, touched
        del block
    assert mem.rise >= 60 * 2**20


@pytest.mark.parametrize(
    "argv, match",
    [(["--size", "40"], "multiple of 16"), (["--steps", "0"], "--steps"), (["--device", "cuda:0"], "CUDA"),
     (["--device", "cpu", "--amp", "fp16"], "--amp=fp16 needs a CUDA device"),
     (["--inference-volume", "16"], "--inference-volume must be at least --size"),
     (["--matmul-size", "0"], "--matmul-size must be positive")],
)
def test_bad_options(argv, match):
    if "cuda:0" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match=match):
        benchmark.main([*TINY, *argv])


@pytest.mark.gpu
def test_cuda_run_uses_amp(tmp_path):
    """``--amp auto`` on CUDA is what ``trainer.amp=auto`` gives there: fp16 (with a GradScaler)."""
    benchmark.main([*TINY, "--amp", "auto", "--device", "cuda", "--skip-loader", "--json", str(tmp_path / "b.json")])
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["device"] == "cuda" and r["amp"] == "fp16"
    assert r["asa_pretrain_peak_mib"] > 0 and math.isfinite(r["matmul_frac"])


@pytest.mark.slow
def test_symmetry_mode_ratios_are_those_of_the_recorded_times(tmp_path):
    args = ["--symmetry", "--size", "64", "--preset", "tiny", "--batch", "1", "--steps", "1", "--warmup", "0",
            "--threads", "1", "--amp", "off", "--swin-feature-size", "12", "--device", "cpu",
            "--json", str(tmp_path / "s.json")]
    assert benchmark.main(args) == 0
    r = json.loads((tmp_path / "s.json").read_text())
    t = r["times"]
    assert r["saca_decoder_overhead"] == pytest.approx(t["asa_saca_decoder"][0] / t["asa_saca_none"][0])
    assert r["saca_encoder_overhead"] == pytest.approx(t["asa_saca_encoder"][0] / t["asa_saca_none"][0])
    assert r["sa_swin_vs_swin_unetr"] == pytest.approx(t["sa_swin_finetune"][0] / t["swin_unetr_finetune"][0])
    with pytest.raises(SystemExit, match="append-md"):
        benchmark.main([*args, "--append-md", str(tmp_path / "B.md")])


LOADER_KEYS = [f"{p}_{m}_{k}" for p in ("store", "items") for m in ("warm", "cold")
               for k in ("crops_per_s_per_worker", "first_batch_s", "worker_rss_mib", "worker_uss_mib")]
CPU_KEYS = [f"{p}_{m}_{k}" for p in ("store", "items") for m in ("warm", "cold")
            for k in ("worker_cpu_ms_per_crop", "main_cpu_ms_per_crop")]  # may round to 0 on tiny volumes


def test_loader_mode_tiny(tmp_path):
    """--loader on tiny volumes (seconds): every figure positive, the ratios those of the figures, the
    row in its own table below the results table's sections."""
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n| date | device |\n| --- | --- |\n\n## Other section\n\ntext\n")
    args = ["--loader", "--loader-volumes", "6", "--loader-shape", "20", "24", "20", "--size", "16", "--batch", "2",
            "--loader-rounds", "1", "--index-cases", "40", "--json", str(tmp_path / "l.json"), "--append-md", str(md)]
    assert benchmark.main(args) == 0
    r = json.loads((tmp_path / "l.json").read_text())
    for key in [*LOADER_KEYS, "store_bytes", "startup_s", "open_index_s", "first_batch_s",
                "startup_worker_rss_mib", "store_vs_items_warm", "store_vs_items_cold",
                "epoch_start_persistent_s", "epoch_start_fresh_s"]:
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, key
    assert all(math.isfinite(r[key]) and r[key] >= 0 for key in CPU_KEYS)
    assert r["store_vs_items_warm"] == pytest.approx(
        r["store_warm_crops_per_s_per_worker"] / r["items_warm_crops_per_s_per_worker"])
    assert not any(key.startswith("cache") for key in r)  # data.cache_dir was removed: the store is the one cache
    assert r["index_cases"] == 40 and r["volumes"] == 6 and r["volume_shape"] == [20, 24, 20] and r["crop"] == 16
    assert r["startup_s"] == pytest.approx(r["open_index_s"] + r["find_and_compare_s"] + r["dataset_s"]
                                           + r["first_batch_s"])
    benchmark.main([*args[:-2], "--no-cold", "--append-md", str(md)])  # a second row, warm only
    text = md.read_text()
    assert text.count("## Data loader") == 1
    rows = [line for line in text.split("## Data loader")[1].splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and "(" in rows[0].split("|")[9] and "(" not in rows[1].split("|")[9]
    assert "(" in rows[0].split("|")[10] and rows[0].split("|")[15].count("/") == 1  # item by item; epoch start
    assert [c.strip() for c in rows[0].split("|")[11:13]] == ["-", "-"]  # the cache_dir columns: history
    assert rows[0].split("|")[5].strip() == "6 × 20×24×20"


def test_gpu_ab_dry_run_compares_old_and_new_paths_and_runs_the_pretrain_loop(tmp_path, capsys):
    """``--gpu-ab --dry-run``: the CPU parts of the GPU A/B at toy sizes, ratios from the recorded times,
    and asa-pretrain from a store to its last step."""
    out = tmp_path / "ab.json"
    assert benchmark.main(["--gpu-ab", "--dry-run", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["preset"] == "tiny" and r["size"] == 32
    assert r["optimizer_new_kernel"] == "fused" and r["shifted_layers"] == 3  # encoder blocks 1, 3; decoder 1
    assert r["optimizer_speedup"] == pytest.approx(r["optimizer_old_s"] / r["optimizer_new_s"])
    assert r["partition_speedup"] == pytest.approx(r["partition_roll_step_s"] / r["partition_gather_step_s"])
    assert r["ar_weights_fraction"] == pytest.approx(r["ar_weights_s"] / r["partition_gather_step_s"])
    assert r["kernel_speedup"] == pytest.approx(r["kernel_sdpa_step_s"] / r["partition_gather_step_s"])
    assert r["loop_last_step"] == 4 and r["loop_steps"] == 4 and r["loop_samples_per_s"] > 0
    assert math.isfinite(r["loop_loss_last"]) and "data.store=" in r["loop_command"]
    assert len(r["times"]["partition_roll"]) == len(r["times"]["partition_gather"]) == len(r["times"]["kernel_sdpa"]) == 1


def test_mfu_uses_the_datasheet_peak_and_none_elsewhere(monkeypatch):
    from benchmarks import harness

    assert harness.datasheet_peak(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert harness.datasheet_peak(torch.device("cuda"), torch.bfloat16) == 989e12
    assert harness.datasheet_peak(torch.device("cuda"), None) is None  # fp32: no tensor-core peak listed
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert harness.datasheet_peak(torch.device("cuda"), torch.float16) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    assert harness.datasheet_peak(torch.device("cuda"), torch.float16) == 125e12
    assert harness.datasheet_peak(torch.device("cuda"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    assert harness.datasheet_peak(torch.device("cuda"), torch.float16) is None
