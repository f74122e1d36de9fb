"""The parts of the GPU check (`benchmarks.gpu`): each measures one thing and returns a flat dict of
what it measured plus ``checks`` ({name: passed}). A `Profile` holds the sizes: the paper's on a
GPU, toy ones for the CPU dry run, so that the same code runs in both.

Each part runs in a process of its own (``python -m benchmarks.gpu --part NAME``), so a part imports
the asa modules it drives inside its function: a part process loads only its own stack (the CUDA
tests part none of MONAI, Hydra or the API), which its time limit counts."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Context", "PARTS", "PROFILES", "Profile", "reap", "run_command", "spawn", "stop_started"]


@dataclass(frozen=True)
class Profile:
    """Sizes of every part: ``gpu`` (the paper's, on CUDA) or ``dry`` (toy sizes on a CPU)."""

    device: str
    size: int  # crop edge of the benchmarks, the pretraining and the fine-tuning
    preset: str
    batch: int  # per-GPU pretraining batch of the benchmark
    amps: tuple[str, str]  # precisions of the two benchmark parts (fp16, bf16 on CUDA)
    steps: int  # timed repeats
    warmup: int
    finetune_batch: int
    finetune_size: int  # crop edge of the fine-tune comparison (SwinUNETR's bottleneck needs 64 or more)
    swin_feature_size: int
    # torchrun pretraining on demo data, SIGTERM at kill_at, then resumed
    demo_cases: int
    demo_size: int
    pretrain_batch: int
    pretrain_steps: int
    kill_at: int
    workers: int
    log_every: int
    val_every: int
    # asa-predict of one case, with the network of a two-step asa-finetune run
    case_shape: tuple[int, int, int]
    finetune_cases: int
    threads: int | None = None
    # the reference matmul's edge and the sliding-window inference volume's (None: benchmarks/speed.py's own)
    matmul_size: int | None = None
    inference_volume: int | None = None


PROFILES = {
    "gpu": Profile(device="cuda", size=128, preset="base", batch=24, amps=("fp16", "bf16"), steps=3, warmup=1,
                   finetune_batch=2, finetune_size=128, swin_feature_size=48,
                   demo_cases=32, demo_size=128, pretrain_batch=4, pretrain_steps=200, kill_at=100, workers=8,
                   log_every=10, val_every=20, case_shape=(240, 240, 155), finetune_cases=5),
    "dry": Profile(device="cpu", size=32, preset="tiny", batch=2, amps=("off", "bf16"), steps=1, warmup=0,
                   finetune_batch=1, finetune_size=64, swin_feature_size=12,
                   demo_cases=8, demo_size=32, pretrain_batch=2, pretrain_steps=24, kill_at=3, workers=0,
                   log_every=1, val_every=100, case_shape=(40, 40, 36), finetune_cases=4, threads=1,
                   matmul_size=512, inference_volume=64),  # inference: one window of finetune_size
}


@dataclass
class Context:
    """Where a part runs: the checkout (``repo``: scripts/, tests/), the scratch folder ``work``
    (data, runs, part results), the sizes and how long it may take."""

    repo: Path
    work: Path
    profile: Profile
    timeout_s: float
    log: Callable[[str], None] = print

    @property
    def device(self) -> torch.device:
        return torch.device(self.profile.device)

    def env(self) -> dict[str, str]:
        """Environment of the commands a part starts: this checkout first on the path, no launcher
        variables inherited."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.repo), env.get("PYTHONPATH")) if p)
        env.setdefault("ASA_DIST_TIMEOUT_S", "300")
        if self.profile.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.profile.threads)
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        return env


_STARTED: set[int] = set()  # process groups this process started and has not reaped yet


def spawn(cmd: Sequence[str], *, stdout, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group (so that it can be stopped with its children)."""
    proc = subprocess.Popen(list(map(str, cmd)), stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    _STARTED.add(proc.pid)
    return proc


def reap(proc: subprocess.Popen, *, kill: bool = False) -> int | None:
    """Wait for ``proc`` (after SIGKILL to its whole group with ``kill``); its exit code."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait()
    _STARTED.discard(proc.pid)
    return code


def stop_started(*_: object) -> None:
    """SIGKILL every process group this process started (a part stopped from outside leaves none behind)."""
    for pgid in list(_STARTED):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    raise SystemExit(128 + signal.SIGTERM)


def run_command(cmd: Sequence[str], *, timeout_s: float, log_path: Path, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> tuple[str, int | None, float]:
    """Run ``cmd`` with its output appended to ``log_path``; (status, exit code, seconds) with status
    ``ok`` (exit 0), ``failed`` or ``timeout`` (the whole process group killed at ``timeout_s``)."""
    begin = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(map(str, cmd))}\n")
        log.flush()
        proc = spawn(cmd, stdout=log, env=env, cwd=cwd)
        try:
            proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            reap(proc, kill=True)
            return "timeout", None, time.perf_counter() - begin
    code = reap(proc)
    return ("ok" if code == 0 else "failed"), code, time.perf_counter() - begin


def _load_benchmark(repo: Path):
    """benchmarks/speed.py of the checkout, as a module."""
    path = repo / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("asa_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _bench(ctx: Context, name: str, args: list[str], size: int | None = None) -> dict[str, Any]:
    """benchmarks/speed.py with ``args`` at the profile's size (or ``size``) and preset; its result dict."""
    p = ctx.profile
    out = ctx.work / f"{name}.json"
    argv = ["--size", str(size or p.size), "--preset", p.preset, "--steps", str(p.steps), "--warmup", str(p.warmup),
            "--device", p.device, "--json", str(out), *args]
    if p.threads is not None:
        argv += ["--threads", str(p.threads)]
    if p.matmul_size is not None:
        argv += ["--matmul-size", str(p.matmul_size)]
    ctx.log(f"benchmarks/speed.py {' '.join(argv)}")
    _load_benchmark(ctx.repo).main(argv)
    return json.loads(out.read_text())


def _finite(values: dict[str, Any]) -> bool:
    return all(v == v and abs(v) != float("inf") for v in values.values() if isinstance(v, float))


# --- the parts -----------------------------------------------------------------------------------
def part_cuda_tests(ctx: Context) -> dict[str, Any]:
    """``pytest -m gpu``: on CUDA every test must run (a skip fails the check); on a CPU they skip."""
    junit = ctx.work / "cuda_tests.xml"
    # on a CPU only the files holding GPU tests are collected (they all skip): seconds instead of a minute
    targets = ["tests"] if ctx.device.type == "cuda" else gpu_test_files(ctx.repo)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}",
           *targets]
    status, code, seconds = run_command(cmd, timeout_s=ctx.timeout_s - 5, log_path=ctx.work / "cuda_tests.log",
                                        env=ctx.env(), cwd=ctx.repo)
    ctx.log((ctx.work / "cuda_tests.log").read_text())
    result: dict[str, Any] = {"command": " ".join(cmd[2:]), "exit_code": code, "pytest_s": seconds}
    if status == "timeout" or not junit.is_file():
        raise RuntimeError(f"pytest {'timed out' if status == 'timeout' else f'exited {code} without a report'}")
    result.update(junit_summary(junit))
    cuda = ctx.device.type == "cuda"
    result["checks"] = {"tests_collected": result["tests"] > 0,
                        "no_failures": result["failures"] + result["errors"] == 0,
                        "none_skipped": result["skipped"] == 0 or not cuda}
    return result


def gpu_test_files(repo: Path) -> list[str]:
    """Test files that mark tests ``gpu`` (relative to ``repo``)."""
    return sorted(str(p.relative_to(repo)) for p in (repo / "tests").rglob("test_*.py")
                  if re.search(r"mark\.gpu\b", p.read_text()))


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failed / skipped test ids of a pytest JUnit XML report."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed, skipped, errors = [], [], []
    for case in suite.iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            failed.append(test_id)
        elif case.find("error") is not None:
            errors.append(test_id)
        elif case.find("skipped") is not None:
            skipped.append(test_id)
    tests = int(suite.get("tests", 0))
    return {"tests": tests, "passed": tests - len(failed) - len(errors) - len(skipped), "failures": len(failed),
            "errors": len(errors), "skipped": len(skipped), "failed_tests": failed + errors,
            "skipped_tests": skipped}


def _benchmark_part(index: int) -> Callable[[Context], dict[str, Any]]:
    def part(ctx: Context) -> dict[str, Any]:
        """ASA vs MONAI MaskedAutoEncoderViT pretrain steps at the profile's batch, the matmul
        reference (matmul_frac), peak memory and the AR weights, at one precision."""
        p = ctx.profile
        r = _bench(ctx, f"benchmark_{index}", ["--batch", str(p.batch), "--amp", p.amps[index], "--parts", "pretrain"])
        return {"results": r, "checks": {"finite": _finite(r), "asa_measured": "asa_step_s" in r}}

    return part


def part_finetune(ctx: Context) -> dict[str, Any]:
    """Fine-tune steps of ASASegmenter vs MONAI UNETR and SwinUNETR, and sliding-window inference vs
    UNETR, at the fine-tuning batch and the first precision."""
    p = ctx.profile
    volume = [] if p.inference_volume is None else ["--inference-volume", str(p.inference_volume)]
    r = _bench(ctx, "finetune", ["--batch", str(p.finetune_batch), "--amp", p.amps[0], "--parts", "finetune",
                                 "inference", "--swin-unetr", "--swin-feature-size", str(p.swin_feature_size),
                                 *volume], size=p.finetune_size)
    return {"results": r, "checks": {"finite": _finite(r), "swin_unetr_measured": "swin_unetr_finetune_step_s" in r}}


def part_sdpa(ctx: Context) -> dict[str, Any]:
    """Which SDPA kernel LW-MSA (ASA, forward + backward), R-MSA and SACA get at the profile's crop,
    per precision. On CUDA the math fallback fails the check."""
    from benchmarks.sdpa import sdpa_backends
    from asa.models import ASA, PRESETS, RegionAttention
    from asa.models.blocks.saca import WindowSymmetryCrossAttention, mirror_index
    from asa.train.precision import resolve_amp

    p, device = ctx.profile, ctx.device
    preset = PRESETS[p.preset]
    dim, heads, window = preset["embed_dim"], preset["num_heads"], preset["window_size"]
    grid = p.size // 8
    tokens = grid**3
    torch.manual_seed(0)
    layers = {
        "lw_msa": (ASA(img_size=p.size, **preset).to(device), lambda m: m(torch.randn(1, 1, *(p.size,) * 3,
                                                                                       device=device)).loss),
        "rmsa": (RegionAttention(dim, heads, window).to(device),
                 lambda m: m(torch.randn(2, tokens, dim, device=device, requires_grad=True),
                             torch.randint(0, 4, (2, tokens), device=device))),
        "saca": (WindowSymmetryCrossAttention(dim, heads, window).to(device),
                 lambda m: m(torch.randn(2, tokens, dim, device=device, requires_grad=True),
                             mirror_index(grid).to(device))),
    }
    result: dict[str, Any] = {"tokens": tokens, "width": dim, "heads": heads, "window": window,
                              "torch_version": torch.__version__}
    if device.type == "cuda":
        result["enabled"] = {name: bool(getattr(torch.backends.cuda, f"{name}_sdp_enabled")())
                             for name in ("flash", "mem_efficient", "math", "cudnn")}
    math_used = []
    for amp in dict.fromkeys(("off", *p.amps)):
        dtype = resolve_amp(amp, device, option="amp")
        for name, (layer, forward) in layers.items():
            def run(layer=layer, forward=forward) -> None:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    out = forward(layer)
                out.float().square().mean().backward()

            counts = sdpa_backends(run)
            result[f"{name}_{amp}"] = counts
            if "math" in counts and amp != "off":
                math_used.append(f"{name}_{amp}")
    result["math_kernel"] = math_used
    result["checks"] = {"fused_kernels_at_reduced_precision": not math_used or device.type != "cuda"}
    return result


_PROGRESS = re.compile(r"step (\d+)/(\d+) epoch (\d+): loss ([^,]+), lr ([^,]+), ([^ ]+) samples/s")


def part_pretrain_torchrun(ctx: Context) -> dict[str, Any]:
    """``asa-preprocess`` of the demo phantoms into a store, then ``torchrun --nproc_per_node=1 -m
    asa.cli.pretrain`` reading it (NCCL on CUDA, gloo on a CPU), AMP as ``trainer.amp=auto`` gives;
    SIGTERM to torchrun once the run passes ``kill_at`` steps, then the same command with
    ``resume=true`` to the end."""
    p = ctx.profile
    out = ctx.work / "pretrain"
    # the schedule spans at least the run (the 0.8 train split holds at least 70 % of the cases)
    epochs = -(-p.pretrain_steps // max(1, int(p.demo_cases * 0.7) // p.pretrain_batch))
    data = ["data=demo", f"data.demo.size={p.demo_size}", f"data.demo.cases={p.demo_cases}",
            f"data.demo.cache_dir={ctx.work / 'demo-cache'}", f"data.store={ctx.work / 'store'}"]
    deadline = time.monotonic() + ctx.timeout_s - 5
    preprocess = [sys.executable, "-m", "asa.cli.preprocess", *data, "progress=false"]
    status, code, preprocess_s = run_command(preprocess, timeout_s=deadline - time.monotonic(),
                                             log_path=ctx.work / "preprocess.log", env=ctx.env(), cwd=ctx.repo)
    ctx.log(f"--- preprocess.log ---\n{(ctx.work / 'preprocess.log').read_text(errors='replace')}")
    if status != "ok":
        raise RuntimeError(f"asa-preprocess {status} (exit code {code}); see {ctx.work / 'preprocess.log'}")
    overrides = [
        *data, f"model={p.preset}", f"data.crop={p.size}", f"data.num_workers={p.workers}", f"output_dir={out}",
        f"trainer.batch_size={p.pretrain_batch}", f"trainer.max_steps={p.pretrain_steps}", f"trainer.epochs={epochs}",
        f"trainer.log_every={p.log_every}", f"trainer.val_every={p.val_every}", "trainer.panel_every=0",
        "trainer.progress=false", "trainer.warmup_steps=10", "trainer.deterministic=false", "probe.every=0",
        f"device={p.device}",
    ]
    if p.threads is not None:
        overrides.append(f"trainer.threads={p.threads}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
           "asa.cli.pretrain", *overrides]
    first = _leg(ctx, cmd, "pretrain_leg1.log", deadline, kill_at=p.kill_at)
    second = _leg(ctx, cmd + ["resume=true"], "pretrain_leg2.log", deadline)
    windows = first["windows"] + second["windows"]
    steady = second["windows"][1:] or second["windows"]  # the first window after a start carries its start-up
    result = {
        "preprocess_command": "asa-preprocess " + " ".join(preprocess[3:]), "preprocess_s": preprocess_s,
        "command": "torchrun --standalone --nproc_per_node=1 -m asa.cli.pretrain " + " ".join(overrides),
        "backend": first["backend"], "world_size": first["world_size"], "precision": first["precision"],
        "leg1_s": first["seconds"], "leg1_exit_code": first["exit_code"], "stopped_at": first["stopped_at"],
        "leg2_s": second["seconds"], "leg2_exit_code": second["exit_code"], "resumed_at": second["resumed_at"],
        "finished_at": second["finished_at"], "wall_s": first["seconds"] + second["seconds"],
        "loss_first": windows[0]["loss"] if windows else None, "loss_last": windows[-1]["loss"] if windows else None,
        "samples_per_s": _median([w["samples_per_s"] for w in steady]),
        "losses": [(w["step"], w["loss"]) for w in windows],
    }
    expected = "nccl" if ctx.device.type == "cuda" else "gloo"
    stopped = result["stopped_at"]
    result["checks"] = {
        f"process_group_{expected}": result["backend"] == expected,
        "stopped_by_sigterm_mid_run": stopped is not None and 0 < stopped < p.pretrain_steps,
        "resumed_where_it_stopped": stopped is not None and result["resumed_at"] == stopped,
        "finished": result["finished_at"] == p.pretrain_steps and second["exit_code"] == 0,
        "loss_fell": bool(windows) and result["loss_last"] < result["loss_first"],
    }
    return result


def _leg(ctx: Context, cmd: list[str], log_name: str, deadline: float, kill_at: int | None = None) -> dict[str, Any]:
    """One torchrun run; with ``kill_at`` it gets SIGTERM once a progress line reaches that step."""
    log_path = ctx.work / log_name
    begin = time.perf_counter()
    with open(log_path, "w") as log:
        proc = spawn(cmd, stdout=log, env=ctx.env(), cwd=ctx.repo)
    signalled = False
    while proc.poll() is None:
        if time.monotonic() > deadline:
            reap(proc, kill=True)
            raise TimeoutError(f"{log_name}: torchrun still running at the part's time limit")
        if kill_at is not None and not signalled:
            steps = [int(m.group(1)) for m in _PROGRESS.finditer(log_path.read_text(errors="replace"))]
            if steps and steps[-1] >= kill_at:
                proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it to its worker
                signalled = True
        time.sleep(0.05)
    reap(proc)
    text = log_path.read_text(errors="replace")
    ctx.log(f"--- {log_name} ---\n{text}")

    def found(pattern: str) -> int | None:
        m = re.search(pattern, text)
        return int(m.group(1)) if m else None

    m = re.search(r"world size (\d+)(?: \((\w+)\))?, precision (\w+)", text)
    windows = [{"step": int(g[0]), "loss": float(g[3]), "samples_per_s": float(g[5])} for g in _PROGRESS.findall(text)]
    return {"seconds": time.perf_counter() - begin, "exit_code": proc.returncode,
            "world_size": int(m.group(1)) if m else None, "backend": m.group(2) if m else None,
            "precision": m.group(3) if m else None, "windows": windows,
            "stopped_at": found(r"received SIGTERM: saving last\.pt at step (\d+)"),
            "resumed_at": found(r"resumed from \S+ at step (\d+)"),
            "finished_at": found(r"pretraining finished at step (\d+)")}


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return None if not values else (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def part_prepare(ctx: Context) -> dict[str, Any]:
    """The data the other parts read: demo BIDS phantoms for pretraining, a BraTS set for a
    two-step fine-tuning and one BraTS case of ``case_shape`` for asa-predict (the phantoms `asa-demo-data` writes)."""
    from asa.data import ensure_demo_dataset, write_demo_dataset

    p = ctx.profile
    start = time.perf_counter()
    ensure_demo_dataset("bids", cases=p.demo_cases, size=p.demo_size, seed=0, cache_dir=ctx.work / "demo-cache")
    bids_s = time.perf_counter() - start
    # the check's own work folder: a rerun there rewrites the same phantoms (asa-demo-data --overwrite)
    write_demo_dataset("brats", ctx.work / "brats_train", cases=p.finetune_cases, size=p.size, seed=0, overwrite=True)
    write_demo_dataset("brats", ctx.work / "brats_case", cases=1, size=tuple(p.case_shape), seed=7, overwrite=True)
    return {"bids_s": bids_s, "total_s": time.perf_counter() - start, "checks": {"written": True}}


def part_predict_case(ctx: Context) -> dict[str, Any]:
    """asa-finetune (trainer=smoke: two steps) of the preset's segmenter, then asa-predict of the
    one BraTS case: the job's seconds, the seconds inside ``predict_volume``, the window batch
    ``auto`` chose, peak GPU memory and the written labels' shape."""
    import nibabel as nib
    import numpy as np

    from asa.api import finetune, predict
    from asa.api.config import compose_config
    from asa.train.precision import amp_name, resolve_amp

    p, device = ctx.profile, ctx.device
    ft_out = ctx.work / "finetune"
    overrides = ["data=brats", f"data.root={ctx.work / 'brats_train'}", f"model={p.preset}", "trainer=smoke",
                 "trainer.panel_every=0", f"data.crop={p.size}", f"data.num_workers={p.workers}",
                 f"output_dir={ft_out}", f"device={p.device}", "overwrite=true"]
    if p.threads is not None:
        overrides.append(f"trainer.threads={p.threads}")
    start = time.perf_counter()
    finetune(compose_config("finetune", overrides))
    finetune_s = time.perf_counter() - start
    pred_out = ctx.work / "predictions"
    cfg = compose_config("predict", [f"checkpoint={ft_out / 'checkpoints' / 'last.pt'}",
                                     f"input={ctx.work / 'brats_case'}", f"output={pred_out}", f"device={p.device}",
                                     "overwrite=true"]
                         + ([f"threads={p.threads}"] if p.threads is not None else []))
    spies: dict[str, list] = {"auto_sw_batch_size": [], "predict_volume": []}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with _spy("asa.eval.inference", "auto_sw_batch_size", spies), _spy("asa.eval.predict", "predict_volume", spies):
        start = time.perf_counter()
        written = predict(cfg)
        predict_s = time.perf_counter() - start
    amp = amp_name(resolve_amp(str(cfg.amp), device, option="amp"))
    result: dict[str, Any] = {"finetune_smoke_s": finetune_s, "predict_s": predict_s, "case_shape": list(p.case_shape),
                              "amp": amp, "written": [str(w) for w in written]}
    if spies["predict_volume"]:
        result["case_inference_s"] = sum(s for s, _ in spies["predict_volume"])
    if spies["auto_sw_batch_size"]:
        result["sw_batch_size_auto"] = spies["auto_sw_batch_size"][0][1]
    if device.type == "cuda":
        result["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    labels = nib.load(str(written[0])) if written else None
    values = set(np.unique(np.asarray(labels.dataobj)).tolist()) if labels is not None else set()
    result["label_values"] = sorted(values)
    result["checks"] = {"one_prediction": len(written) == 1,
                        "case_shape": labels is not None and tuple(labels.shape) == tuple(p.case_shape),
                        "brats_labels": bool(values) and values <= {0, 1, 2, 4}}
    return result


@contextlib.contextmanager
def _spy(module_name: str, name: str, record: dict[str, list]) -> Iterator[None]:
    """Wrap ``module.name`` for the block, recording (seconds, return value) of each call; a name
    the module no longer has is left alone (the figure is then missing, not wrong)."""
    module = importlib.import_module(module_name)
    real = getattr(module, name, None)
    if real is None:
        yield
        return

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        value = real(*args, **kwargs)
        record[name].append((time.perf_counter() - start, value if isinstance(value, (int, float)) else None))
        return value

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, real)


PARTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "prepare": part_prepare,
    "cuda_tests": part_cuda_tests,
    "benchmark_fp16": _benchmark_part(0),
    "pretrain_torchrun": part_pretrain_torchrun,
    "predict_case": part_predict_case,
    "finetune": part_finetune,
    "benchmark_bf16": _benchmark_part(1),
    "sdpa": part_sdpa,
}
