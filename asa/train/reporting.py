"""What a training run shows: messages on rank 0, a progress bar or plain progress lines, windowed
step averages, TensorBoard scalars and image panels."""
from __future__ import annotations

import datetime
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from asa.io import describe_write_failure

from .distributed import DistEnv, all_reduce_mean
from .updates import REL_UPDATE_KEYS, update_gap_note

__all__ = ["TrainLog", "scalar"]


def scalar(v: object) -> float:
    """A logged value as a float (tensors are averaged)."""
    return float(v.detach().float().mean().item()) if isinstance(v, torch.Tensor) else float(v)


class TrainLog:
    """Rank 0 writes; every rank calls (the window means are all-reduced under DDP).

    A tqdm bar shows progress on a terminal; under a scheduler (stderr to a file) or with
    ``progress=False`` a plain line is printed every logging window instead. A TensorBoard write that fails (a
    folder turned read-only, a full disk) is raised as a `WriteError` naming ``tb_dir`` by the call after it, which
    TensorBoard's writer thread reports: that thread prints no traceback of its own.
    """

    def __init__(self, env: DistEnv, tb_dir: Path) -> None:
        self.env, self.tb_dir = env, tb_dir
        self.writer = None
        self.bar = None
        self.use_bar = False
        self._window: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._window_steps = 0
        self._threads: set[threading.Thread] = set()  # TensorBoard's writer thread
        self._excepthook = threading.excepthook

    def say(self, msg: str) -> None:
        if self.env.is_main:
            tqdm.write(msg, file=sys.stderr)
            sys.stderr.flush()

    def open(self, *, start_step: int, stop_step: int, progress: bool, resumed: bool,
             window: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """Open TensorBoard (rank 0) and the progress bar. A resumed run drops the events logged after
        ``start_step`` by the run it continues (those steps are logged again); the points at
        ``start_step`` itself were written before its checkpoint and stay (TensorBoard purges every
        step >= ``purge_step``, hence the + 1). ``window``: the open window it stopped in (`window_state`), whose
        steps its first window then averages too, as the uninterrupted run's does (its throughput counts this
        start's steps alone)."""
        if self.env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            before = set(threading.enumerate())
            self.writer = SummaryWriter(str(self.tb_dir), purge_step=start_step + 1 if resumed else None)
            self._threads = set(threading.enumerate()) - before
            self._excepthook, threading.excepthook = threading.excepthook, self._thread_failed
        self.use_bar = self.env.is_main and progress and sys.stderr.isatty()
        self.bar = tqdm(total=stop_step, initial=start_step, disable=not self.use_bar,
                        desc="train", dynamic_ncols=True, file=sys.stderr)
        self._start_step, self._stop_step, self._t_start = start_step, stop_step, time.perf_counter()
        self._window, self._counts, self._window_steps, self._t_window = {}, {}, 0, time.perf_counter()
        if window is not None:
            self._window, self._counts = dict(window["sums"]), {k: int(n) for k, n in window["counts"].items()}
        if self.env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.env.device)

    def window_state(self) -> dict[str, dict[str, float]]:
        """The open window's sums and counts, read to the host: what a checkpoint keeps of it (`open`)."""
        return {"sums": {k: float(v) for k, v in self._window.items()}, "counts": dict(self._counts)}

    def _thread_failed(self, args: threading.ExceptHookArgs) -> None:
        if args.thread in self._threads and isinstance(args.exc_value, OSError):
            return  # TensorBoard raises it again in the training thread, at its next call (`_written`)
        self._excepthook(args)

    def _written(self, write: Callable[[], object]) -> None:
        """Make a TensorBoard call; a write that failed, in it or on TensorBoard's thread before it, is raised as a
        `WriteError` naming the folder."""
        try:
            write()
        except OSError as err:
            raise (describe_write_failure(err, self.tb_dir / "events") or err) from err

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self._written(lambda: self.writer.add_scalar(k, v, step))

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        """Image panels ({tag: [C,H,W] in [0,1]}) on rank 0."""
        if self.writer is None:
            return
        for tag, img in images.items():
            self._written(lambda: self.writer.add_image(tag, img.detach().float().cpu().clamp(0, 1), step))
        self._written(self.writer.flush)

    def flush(self) -> None:
        if self.writer is not None:
            self._written(self.writer.flush)

    def close(self, *, failing: bool = False) -> None:
        """Write what is pending and close TensorBoard's file; a write that fails is said as a warning, or not at all
        when the run is ``failing`` (its own error says what happened)."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            self._written(writer.close)
        except OSError as err:
            if not failing:
                self.say(f"warning: TensorBoard's last events were not written ({err.strerror or err})")
        finally:
            threading.excepthook, self._threads = self._excepthook, set()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ------------------------------------------------------------------------------- logging windows
    def add_step(self, entry: Mapping[str, float | torch.Tensor]) -> None:
        """Count one optimiser step's values into the current window (a step may leave a key out,
        e.g. the loss of a skipped non-finite step: that key's mean is over the steps that have it). A value
        may be a 0-dim tensor on the device: it is summed there and read once, when the window closes."""
        for k, v in entry.items():
            self._window[k] = self._window.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        self._window_steps += 1
        self.bar.update(1)

    def take_window(self, *, samples_per_step: int, nonfinite_total: int) -> dict[str, float]:
        """The window's means (averaged across ranks) plus throughput and counters; starts a new window.

        On CUDA ``sys/cuda_max_mem_gb`` is the peak allocated memory within the window (the peak is
        reset at each window's start)."""
        elapsed = max(time.perf_counter() - self._t_window, 1e-9)
        steps = self._window_steps
        means = {k: float(v) / self._counts[k] for k, v in self._window.items()}
        means = all_reduce_mean(means, self.env) if self.env.distributed else means
        means["train/samples_per_s"] = samples_per_step * steps / elapsed
        if self.env.device.type == "cuda":
            means["sys/cuda_max_mem_gb"] = torch.cuda.max_memory_allocated(self.env.device) / 2**30
            torch.cuda.reset_peak_memory_stats(self.env.device)
        means["train/nonfinite_steps"] = float(nonfinite_total)
        self._window, self._counts, self._window_steps, self._t_window = {}, {}, 0, time.perf_counter()
        return means

    def progress(self, means: Mapping[str, float], *, step: int, epoch: int) -> None:
        """Show a window's loss, lr and throughput: in the bar, or as a line with the ETA."""
        loss, lr, sps = means.get("train/loss", float("nan")), means["train/lr"], means["train/samples_per_s"]
        gap = update_gap_note(means) is not None  # the encoder barely moves: show both relative updates
        enc, dec = (means.get(k, float("nan")) for k in REL_UPDATE_KEYS)
        if self.use_bar:
            extra = {"upd_enc/dec": f"{enc:.2g}/{dec:.2g}"} if gap else {}
            self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", sps=f"{sps:.3g}", **extra, refresh=False)
            return
        done = step - self._start_step
        rate = done / max(time.perf_counter() - self._t_start, 1e-9)
        eta = (self._stop_step - step) / rate if rate > 0 else float("inf")
        eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        updates = f", rel. update encoder/decoder {enc:.2g}/{dec:.2g}" if gap else ""
        self.say(f"step {step}/{self._stop_step} epoch {epoch}: loss {loss:.4g}, lr {lr:.3g}{updates}, "
                 f"{sps:.3g} samples/s, ETA {eta_text}")
