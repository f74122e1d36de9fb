"""Benchmark report: the recorded targets, the summary tables printed at the end of a run and the
BENCHMARKS.md rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asa.io import atomic_write_text

TARGETS = {  # key: (comparison, bound)
    "speedup_vs_monai_mae": (">=", 5.0),
    "matmul_frac": (">=", 0.8),
    "bf16_speedup": (">=", 1.7),
    "case_inference_s": ("<=", 45.0),
    "ar_weights_fraction": ("<=", 0.03),
    "finetune_speedup_vs_unetr": (">=", 1.0),
    "inference_speedup_vs_unetr": (">=", 1.0),
    "loader_headroom": (">=", 2.0),
}


def verdict(key: str, value: float) -> str:
    op, bound = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{'ok' if ok else 'MISS'} (target {op} {bound:g})"


def _mib(r: dict[str, Any], *keys: str) -> str:
    return " / ".join(f"{r[k]:.0f}" if k in r else "-" for k in keys)


def format_table(r: dict[str, Any]) -> str:
    """The human-readable summary printed at the end of a run (the parts it measured)."""
    rows = []
    if "asa_step_s" in r:
        mae = "monai_mae_step_s" in r
        batch_note = (f" (MONAI at batch {r['monai_mae_batch']}, out of memory at {r['monai_mae_oom_batch']})"
                      if "monai_mae_oom_batch" in r and mae else
                      " (MONAI out of memory at batch 1)" if "monai_mae_oom_batch" in r else "")
        rows += [
            ("pretrain step ASA / MONAI MAE",
             f"{r['asa_step_s']:.3f} s / " + (f"{r['monai_mae_step_s']:.3f} s" if mae else "-") + batch_note, ""),
            ("ASA samples/s", f"{r['asa_samples_per_s']:.3f}", ""),
            ("matmul peak", f"{r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s", ""),
            ("matmul_frac ASA", f"{r['matmul_frac']:.3f}", verdict("matmul_frac", r["matmul_frac"])),
            ("mfu ASA (datasheet peak)", "-" if r.get("mfu") is None else f"{r['mfu']:.3f}",
             "" if r.get("mfu") is None else f"of {r['datasheet_peak_flops_per_s'] / 1e12:.0f} TFLOP/s"),
            ("patch_informativeness", f"{r['ar_weights_s'] * 1e3:.1f} ms", ""),
            ("ar_weights_fraction", f"{r['ar_weights_fraction']:.4f}", verdict("ar_weights_fraction", r["ar_weights_fraction"])),
            ("peak MiB pretrain ASA / MONAI", _mib(r, "asa_pretrain_peak_mib", "monai_mae_peak_mib"), ""),
        ]
        if mae:
            rows[1:1] = [("speedup_vs_monai_mae", f"{r['speedup_vs_monai_mae']:.2f}×",
                          verdict("speedup_vs_monai_mae", r["speedup_vs_monai_mae"]))]
            rows += [("step GFLOP ASA / MONAI MAE", f"{r['asa_step_flops'] / 1e9:.1f} / {r['monai_mae_step_flops'] / 1e9:.1f}", ""),
                     ("matmul_frac MONAI MAE", f"{r['monai_mae_matmul_frac']:.3f}", "(context)")]
        speedup = f"{r['amp']}_speedup"
        if speedup in r:
            rows += [(f"ASA step fp32 / {r['amp']}", f"{r['asa_fp32_step_s']:.3f} s / {r['asa_step_s']:.3f} s", ""),
                     (speedup, f"{r[speedup]:.2f}×", verdict("bf16_speedup", r[speedup]) if speedup == "bf16_speedup" else "")]
    if "asa_finetune_step_s" in r:
        swin = "swin_unetr_finetune_step_s" in r
        rows += [
            (f"fine-tune step ASASeg / UNETR{' / SwinUNETR' if swin else ''}, batch {r.get('finetune_batch', r['batch'])}",
             f"{r['asa_finetune_step_s']:.3f} s / {r['unetr_finetune_step_s']:.3f} s"
             + (f" / {r['swin_unetr_finetune_step_s']:.3f} s" if swin else ""), ""),
            ("finetune_speedup_vs_unetr", f"{r['finetune_speedup_vs_unetr']:.2f}×",
             verdict("finetune_speedup_vs_unetr", r["finetune_speedup_vs_unetr"])),
            (f"peak MiB fine-tune ASASeg / UNETR{' / SwinUNETR' if swin else ''}",
             _mib(r, "asa_finetune_peak_mib", "unetr_finetune_peak_mib", *(["swin_unetr_finetune_peak_mib"] if swin else [])), ""),
        ]
        if swin:
            rows.append(("finetune_speedup_vs_swin_unetr", f"{r['finetune_speedup_vs_swin_unetr']:.2f}×", ""))
    if "asa_inference_s" in r:
        rows += [
            (f"inference {r['inference_volume']}³ ASASeg / UNETR", f"{r['asa_inference_s']:.3f} s / {r['unetr_inference_s']:.3f} s", ""),
            ("inference_speedup_vs_unetr", f"{r['inference_speedup_vs_unetr']:.2f}×",
             verdict("inference_speedup_vs_unetr", r["inference_speedup_vs_unetr"])),
            ("peak MiB inference ASASeg / UNETR", _mib(r, "asa_inference_peak_mib", "unetr_inference_peak_mib"), ""),
        ]
    if "case_inference_s" in r:
        shape = " × ".join(map(str, r["case_shape"]))
        rows += [(f"case_inference_s (4 × {shape})", f"{r['case_inference_s']:.1f} s",
                  verdict("case_inference_s", r["case_inference_s"])),
                 ("peak MiB case inference", f"{r['case_inference_peak_mib']:.0f}", ""),
                 (f"case contiguous, window batch {r['batch']}",
                  f"{r['case_inference_contiguous_s']:.1f} s, {r['case_inference_contiguous_peak_mib']:.0f} MiB", "")]
    if "loader_crops_per_s" in r and "loader_headroom" not in r:
        rows.append(("store loader crops/s (2 workers)", f"{r['loader_crops_per_s']:.1f}", ""))
    if "loader_headroom" in r:
        rows += [
            ("store loader crops/s (2 workers) / step samples/s", f"{r['loader_crops_per_s']:.1f} / {r['asa_samples_per_s']:.3f}", ""),
            ("loader_headroom (this device)", f"{r['loader_headroom']:.1f}", verdict("loader_headroom", r["loader_headroom"])),
        ]
    head = (f"asa benchmark: {r['size']}³, batch {r['batch']}, preset {r['preset']}, {r['device_name']}, "
            f"precision {r['amp']}, {r['threads']} threads, torch {r['torch_version']}, {r['steps']} timed / {r['warmup']} warm-up")
    if not rows:
        return head
    width = max(len(name) for name, _, _ in rows)
    lines = [head] + [f"  {name:<{width}}  {value:<24} {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines + [f"  note: {r['unetr_note']}"])


MD_HEADER = """\
# Benchmarks

Produced by `benchmarks/speed.py` (one row per run, newest last; the command is in each row).
All figures are medians of timed repeats after warm-up; the compared models run alternately, on
the same input, in the same process, at the same precision (`amp` column: fp32, bf16 autocast, or
fp16 autocast + GradScaler on CUDA); the device column gives the CPU thread count.

| column | meaning | target |
| --- | --- | --- |
| step s | ASA pretrain step (forward + backward + AdamW), seconds | |
| samples/s | batch / step s | |
| vs MAE | `speedup_vs_monai_mae`: MONAI `MaskedAutoEncoderViT` step / ASA step, same encoder/decoder width, depth, heads, patch 8, mask ratio 0.75, same precision | ≥ 5 |
| matmul frac | `matmul_frac` (`flop_utilization` before 2026-11-23, column "MFU"): ASA step FLOPs (`FlopCounterMode`, fwd + bwd) / step time / FLOP/s of a dense matmul at the run's precision (4096² on CPU, 8192² on CUDA, unless `--matmul-size`) timed in the same run; MONAI's in brackets | ≥ 0.8 |
| AR | `ar_weights_fraction`: `patch_informativeness` of the batch / ASA step | ≤ 0.03 |
| FT vs UNETR | `finetune_speedup_vs_unetr`: UNETR / ASASegmenter fine-tune step (fwd + bwd + SGD, Dice + BCE, 4 → 3 channels); UNETR's ViT is fixed at 16³ patches and 12 layers | ≥ 1 |
| inf vs UNETR | `inference_speedup_vs_unetr`: Gaussian sliding-window inference (overlap 0.5) over a (1.5·size)³ volume (unless `--inference-volume`) | ≥ 1 |
| peak GiB | pretrain peak memory ASA / MONAI MAE: parameters + optimizer state + peak rise during a step (CPU: RSS; CUDA: allocated) | ≤ 30 on GPU at batch 24 |
| loader | `loader_headroom`: crops/s of the pretraining loader reading a store (2 workers, synthetic 1.25 × 1.5 × 1.25 × size volumes, page cache warm) / samples/s of the ASA step, both on the machine of the row (a CPU row is the CPU's own ratio; for a GPU see "Data loader" below). Rows before 2026-11-23: batches/s of the demo `cache_dir` loader × step s | ≥ 2 |
| bf16× | `bf16_speedup` (in an fp16 row `fp16_speedup`): ASA fp32 step / ASA step at the row's precision, timed alternately in the same run | ≥ 1.7 (bf16) |
| case s | `case_inference_s`: `asa.eval.predict_volume` (the `asa-predict` path: Gaussian windows of size³, overlap 0.5, window batch `auto` (rows before 2026-11-22: window batch = batch), channels-last with bf16 on a CPU) of the preset's `ASASegmenter` over one 4 × 240 × 240 × 155 case | ≤ 45 |
| load | 1-min load average when the run started: other processes on the machine (above ~0.5 on a 2-core CPU every threaded op waits for the competing process, and the figures are pessimistic) | |

| date | device | torch | amp | size | batch | preset | step s | samples/s | vs MAE | matmul frac (MAE) | AR | FT vs UNETR | inf vs UNETR | peak GiB ASA / MAE | bf16× | case s | loader | load | command |
| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
"""


def _cell(r: dict[str, Any], key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "-"


def markdown_row(r: dict[str, Any]) -> str:
    """The results-table row of a run with the pretrain part; '-' for what it did not measure.
    A MONAI MAE measured at a smaller batch (it ran out of memory at the run's) shows its batch."""
    mae = _cell(r, "speedup_vs_monai_mae", ".2f")
    if "monai_mae_oom_batch" in r:
        mae += f" (MAE batch {r['monai_mae_batch']})" if "monai_mae_batch" in r else " (MAE out of memory)"
    mfu = f"{r['matmul_frac']:.2f}" + (f" ({r['monai_mae_matmul_frac']:.2f})"
                                            if "monai_mae_matmul_frac" in r else "")
    peak = f"{r['asa_pretrain_peak_mib'] / 1024:.2f} / " + (f"{r['monai_mae_peak_mib'] / 1024:.2f}"
                                                           if "monai_mae_peak_mib" in r else "-")
    cells = [
        r["date"][:10], r["device_name"], r["torch_version"], r["amp"], f"{r['size']}³", str(r["batch"]), r["preset"],
        f"{r['asa_step_s']:.3f}", f"{r['asa_samples_per_s']:.2f}", mae, mfu, f"{r['ar_weights_fraction']:.4f}",
        _cell(r, "finetune_speedup_vs_unetr", ".2f"), _cell(r, "inference_speedup_vs_unetr", ".2f"), peak,
        _cell(r, f"{r['amp']}_speedup", ".2f"), _cell(r, "case_inference_s", ".1f"), _cell(r, "loader_headroom", ".1f"),
        _cell(r, "load_avg_start", ".1f"), f"`{r['command']}`",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def parse_markdown_row(line: str, header: str) -> dict[str, str]:
    """{column: cell} of a results-table ``line`` under the table's ``header`` line (escaped pipes
    ``\\|`` stay inside their cell); raises ValueError when the cell counts differ."""
    def split(text: str) -> list[str]:
        text = text.strip()
        if not (text.startswith("|") and text.endswith("|")):
            raise ValueError(f"not a table row: {text[:60]!r}")
        cells, cell, i = [], "", 1
        while i < len(text) - 1:
            if text[i] == "\\" and text[i + 1] == "|":
                cell, i = cell + "|", i + 2
                continue
            if text[i] == "|":
                cells.append(cell.strip())
                cell = ""
            else:
                cell += text[i]
            i += 1
        return cells + [cell.strip()]

    names, cells = split(header), split(line)
    if len(names) != len(cells):
        raise ValueError(f"the row has {len(cells)} cells, the table {len(names)} columns")
    return dict(zip(names, cells))


def append_markdown(r: dict[str, Any], path: Path) -> Path:
    """Add the run's row below the last row of the results table (the table whose header starts
    ``| date |``; the sections after it stay after it), creating the file with its header first.
    The file is replaced atomically."""
    lines = (path.read_text() if path.is_file() else MD_HEADER).splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| date |")), None)
    if header is None:
        raise ValueError(f"{path} has no results table (a line starting '| date |')")
    end = header + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, markdown_row(r))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def format_symmetry_table(r: dict[str, Any]) -> str:
    """The summary of a ``--symmetry`` run."""
    rows = []
    if "saca_decoder_overhead" in r:
        rows += [
            ("ASA pretrain step saca none / decoder / encoder",
             f"{r['asa_step_s']:.3f} / {r['asa_saca_decoder_step_s']:.3f} / {r['asa_saca_encoder_step_s']:.3f} s"),
            ("saca_decoder_overhead", f"{r['saca_decoder_overhead']:.2f}×"),
            ("saca_encoder_overhead", f"{r['saca_encoder_overhead']:.2f}×"),
        ]
    if "sa_swin_vs_swin_unetr" in r:
        rows += [
            (f"fine-tune step SwinUNETR / SA-Swin (feature {r['swin_feature_size']})",
             f"{r['swin_unetr_finetune_step_s']:.3f} / {r['sa_swin_finetune_step_s']:.3f} s"),
            ("sa_swin_vs_swin_unetr", f"{r['sa_swin_vs_swin_unetr']:.2f}×"),
            ("peak MiB fine-tune SwinUNETR / SA-Swin",
             f"{r['swin_unetr_finetune_peak_mib']:.0f} / {r['sa_swin_finetune_peak_mib']:.0f}"),
        ]
    head = (f"asa symmetry benchmark: {r['size']}³, batch {r['batch']}, preset {r['preset']}, {r['device_name']}, "
            f"precision {r['amp']}, {r['threads']} threads, {r['steps']} timed / {r['warmup']} warm-up")
    width = max(len(name) for name, _ in rows)
    return "\n".join([head] + [f"  {name:<{width}}  {value}" for name, value in rows])


LOADER_HEADER = "| date | device | cpus | load | volumes | crop | batch | workers |"
LOADER_SECTION = """\
## Data loader

`benchmarks/speed.py --loader` (one row per run): the pretraining loader (brain-centred crops, no
augmentation, `asa.train` loader) over synthetic brains (int16 smooth random texture in an
ellipsoid, zero outside, uncompressed NIfTI), read from a store (`asa-preprocess`, fp16 unless
stated) a batch at a time (`store`: each crop copied from the memory map into a reused
shared-memory slot of the batch) and item by item (its per-item MONAI pipeline, then collation: the
store path before whole-batch reads, and the one CPU augmentation takes), alternated round by
round. The `cache` columns are those of rows before 2026-11-23, which also read `data.cache_dir`
(MONAI `PersistentDataset`: fp32 crops, pickled); it was removed then, the store being the one
preprocessing cache ("-" since). crops/s per worker are timed from the first batch on; warm: the
files read once before the round; cold: evicted with `posix_fadvise(DONTNEED)` before it. Worker
memory: RSS, in brackets USS (the pages only that worker holds). Epoch start: from an epoch's start
to its first batch (store, the workers of the row), persistent workers / fresh ones. Start-up:
reading a store index of that many cases, listing the data root and comparing sizes/mtimes,
building the dataset and loader, and the first batch (2 workers). On a machine shared with other
jobs the `load` column (1-min load average at the start; ideal ≤ CPUs) says how much of the CPU the
loader got.

| date | device | cpus | load | volumes | crop | batch | workers | store crops/s/worker warm (cold) | store item by item warm (cold) | cache_dir warm (cold) | store / cache warm | worker MiB RSS (USS) store / cache | GiB on disk store / cache | epoch start s persistent / fresh | start-up s (index cases) | command |
| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- |
"""


def loader_markdown_row(r: dict[str, Any]) -> str:
    """A ``--loader`` run's row; its ``cache`` cells are "-" (``data.cache_dir`` was removed on 2026-11-23)."""
    cold = "store_cold_crops_per_s_per_worker" in r

    def rates(path: str) -> str:
        warm = f"{r[f'{path}_warm_crops_per_s_per_worker']:.1f}"
        return warm + (f" ({r[f'{path}_cold_crops_per_s_per_worker']:.1f})" if cold else "")

    cells = [
        r["date"][:10], r["device_name"], str(r.get("cpus", "")), f"{r['load_avg_start']:.1f}",
        f"{r['volumes']} × {'×'.join(map(str, r['volume_shape']))}", f"{r['crop']}³", str(r["batch"]), str(r["workers"]),
        rates("store"), rates("items"), "-", "-",
        f"{r['store_warm_worker_rss_mib']:.0f} ({r['store_warm_worker_uss_mib']:.0f}) / -",
        f"{r['store_bytes'] / 2**30:.2f} ({r['store_dtype']}) / -",
        (f"{r['epoch_start_persistent_s']:.2f} / {r['epoch_start_fresh_s']:.2f}" if "epoch_start_persistent_s" in r
         else "-"),
        f"{r['startup_s']:.1f} ({r['index_cases']})" if "startup_s" in r else "-",
        f"`{r['command']}`",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def append_loader_markdown(r: dict[str, Any], path: Path) -> Path:
    """Add a ``--loader`` run's row below the last row of the "Data loader" table (the section is
    added at the end of the file first when it has none). The file is replaced atomically."""
    text = path.read_text() if path.is_file() else MD_HEADER
    if LOADER_HEADER not in text:
        text = text.rstrip("\n") + "\n\n" + LOADER_SECTION
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(LOADER_HEADER))
    end = header + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, loader_markdown_row(r))
    return atomic_write_text(path, "\n".join(lines) + "\n")
