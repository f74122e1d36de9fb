"""What a study's units cost on the device it runs on, timed there: a short run of one unit per console script
(the pilot's fine-tuning, a pretraining run), in this process, in a scratch folder, with the unit's own
overrides (network, crop, threads, device, its own cases); never a figure from another device."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import signal
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asa.api import finetune, pretrain
from asa.api.finetune import finetune_fused
from asa.api.config import load_config
from asa.api.machinery.dataset import dataset_root
from asa.api.machinery.run import OptionError
from asa.data import discover
from asa.study import transfer
from asa.study.common import machine, refuse
from asa.study.scheduler import Stopped, Unit
from asa.study.tables import logged_series

TIMED_STEPS = 24  # optimiser steps of a timed run (fewer when the unit trains fewer)
RUN_KEYS = ("output_dir", "resume", "trainer.epochs", "trainer.val_every", "trainer.max_steps", "trainer.log_every",
            "trainer.val_every_steps", "trainer.ckpt_every", "trainer.progress")  # the timed run sets its own
COMPOSED: dict[tuple[str, tuple[str, ...]], Any] = {}  # `composed` configs by entry and overrides but folder, seed


@dataclasses.dataclass(frozen=True)
class StepCost:
    """One console script's costs here: its start and end (``fixed``), one optimiser step, one validation round of
    ``val_cases`` cases and, for fine-tuning, scoring one case as the study does (`asa.study.transfer.score`), in
    seconds."""

    fixed: float
    step: float
    round: float
    val_cases: int
    score: float = math.nan
    runs: int = 1  # the runs trained as one (asa-study --fused): a step and a round are all of theirs

    @property
    def case(self) -> float:
        """Seconds to predict one case (a validation round's share; NaN where the timed round had none)."""
        return self.round / self.val_cases if self.val_cases else math.nan


def script(unit: Unit) -> str:
    """The name ``unit`` is priced under: its console script's (``finetune``, ``pretrain``; a scoring unit
    ``finetune``'s), or ``fused-K`` for K runs trained as one, timed as such."""
    if unit.group:
        return f"fused-{len(unit.group)}"
    return unit.config[0] if unit.config else "finetune"


@dataclasses.dataclass(frozen=True)
class Costs:
    """A study's unit costs on ``device`` (`measure`), by what they are priced under (`script`)."""

    device: str
    scripts: dict[str, StepCost]

    def seconds(self, unit: Unit) -> float:
        """The planned seconds of ``unit``: start, its steps and validation rounds; a scoring unit its start and its
        cases scored; NaN for what was not timed."""
        if (cost := self.scripts.get(script(unit))) is None:
            return math.nan
        entry, overrides = unit.config or ("finetune", ())
        if unit.config is None:
            return cost.fixed + unit.cases * cost.score
        # a round over the unit's own validation cases where it names them (none: it never validates)
        val = next((len(c["val"]) for c in unit.splits), None)
        round_seconds = cost.round if val is None else val * cost.case if val else 0.0
        return cost.fixed + unit.steps * cost.step + validation_rounds(entry, overrides, unit.steps) * round_seconds

    def line(self) -> str:
        parts = []
        for name, c in self.scripts.items():
            what = f"finetune, {c.runs} runs as one" if c.runs > 1 else name
            part = f"{what}: {c.fixed:.1f} s start and end, {c.step:.3f} s a step, {c.round:.1f} s a validation round "
            part += f"of {c.val_cases} case(s)"
            if not math.isnan(c.score):
                part += f", {c.score:.1f} s to score a case"
            parts.append(part)
        return f"priced on {self.device} (timed here, {TIMED_STEPS} steps or fewer each): " + "; ".join(parts)


def composed(entry: str, overrides: Sequence[str]) -> Any:
    """``entry``'s config as its console script composes and checks it (`asa.api.config.load_config`: a bad override
    raises ValueError), composed once for the units that differ only in their folder and seed (composing is about
    0.2 s; a study plans hundreds of units)."""
    key = (entry, tuple(o for o in overrides if not o.startswith(("output_dir=", "seed="))))
    if key not in COMPOSED:
        COMPOSED[key] = load_config(entry, *overrides)
    return COMPOSED[key]


def validation_rounds(entry: str, overrides: Sequence[str], steps: int) -> int:
    """The validation rounds a run of ``steps`` optimiser steps holds before its last (the cadence of its config:
    ``trainer.val_every`` epochs, at least ``trainer.val_min_steps`` apart); the last is in the start-and-end cost."""
    trainer = composed(entry, overrides).trainer
    return epoch_rounds(steps, int(trainer.epochs), int(trainer.val_every), int(trainer.val_min_steps or 0))


def epoch_rounds(steps: int, epochs: int, every: int, gap: int) -> int:
    """The validation rounds before the last of a run of ``steps`` optimiser steps in ``epochs`` epochs: one every
    ``every`` epochs, at least ``gap`` steps apart (the engine's epoch cadence)."""
    per_epoch, rounds, last = max(1, steps // max(1, epochs)), 0, 0
    for epoch in range(1, epochs):
        if epoch % every == 0 and epoch * per_epoch - last >= gap:
            rounds, last = rounds + 1, epoch * per_epoch
    return rounds


def time_unit(unit: Unit, moved: Mapping[str, str], steps: int = TIMED_STEPS) -> StepCost:
    """Run ``unit``'s script for ``steps`` steps (at most its own) in a scratch folder, a validation round in the
    middle; read the steps' time off its log (`train/samples_per_s`, one window of a sixth of the steps, as a unit
    logs a window of steps: a logging step's extra work, a host sync and the relative update on a GPU, is shared as
    in the unit, not paid at every step). ``moved``: folders the unit reads that planning did not write (a dry
    run) -> where they were written for this measurement."""
    entry, first = unit.config
    steps = max(2, min(steps, unit.steps))
    window = max(1, steps // 6)  # steps a logged window holds: the first window (warm-up) and the round's apart
    splits = unit.splits  # its runs' own cases, where named
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="asa-study-cost-") as scratch:
        cfgs = []
        for k, overrides in enumerate(unit.group or (first,)):  # a fused unit: each of its runs, trained as one
            out = Path(scratch) / f"run-{k}"
            out.mkdir()
            if k < len(splits):
                (out / "splits.json").write_text(json.dumps(splits[k]))
            kept = [_startable(functools.reduce(lambda o, m: o.replace(*m), moved.items(), o)) for o in overrides
                    if o.split("=", 1)[0].lstrip("+") not in RUN_KEYS]
            cfgs.append(load_config(entry, *kept, f"output_dir={out}", "resume=false", "trainer.epochs=1000000",
                                    f"trainer.max_steps={steps}", f"trainer.log_every={window}",
                                    f"trainer.val_every_steps={steps // 2}", "trainer.ckpt_every=0",
                                    "trainer.progress=false"))
        cfg, out = cfgs[0], Path(scratch) / "run-0"  # the lead run: a fused step's log is the group's
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if unit.group:
                    result = finetune_fused(cfgs)[0]
                elif entry == "finetune":
                    result = finetune(cfg)
                else:
                    result = pretrain(cfg)
        except (OptionError, ValueError) as err:  # what the unit itself would meet, after the stages before it
            refuse(f"[study] {unit.name} would be refused: {err}")
        if result.preempted:  # a stop signal ended the timed run (it saved, nothing to price): the dry run stops
            raise Stopped(result.signal or signal.SIGTERM)
        wall = time.perf_counter() - started
        rates = [v for _, v in logged_series(out, ["train/samples_per_s"])["train/samples_per_s"]]
        val = json.loads((out / "splits.json").read_text()).get("val", [])
        # a scoring unit's cost a case: one run's (a fused draw's runs, scored as one, are priced one by one)
        scored = math.nan
        if entry == "finetune" and val and not unit.group:
            scored = _score_seconds(cfg, out, val[0])
    torch.set_num_threads(threads)
    per_step = [int(cfg.trainer.batch_size) * int(cfg.trainer.accum_steps) / r for r in rates]  # in each window
    return StepCost(*window_costs(per_step, window, steps, wall), val_cases=len(val), score=scored,
                    runs=max(1, len(unit.group)))


def _startable(override: str) -> str:
    """``override``, but a start from an encoder not yet pretrained (a dry run's plan; a fused group's pretrained
    runs) made a start from random weights: a step costs the same from either."""
    key, _, value = override.partition("=")
    if key.lstrip("+") == "model.pretrained" and value not in ("null", "") and not Path(value).exists():
        return f"{key}=null"
    return override


def window_costs(per_step: Sequence[float], window: int, steps: int, wall: float) -> tuple[float, float, float]:
    """(start and end, a step, a validation round) in seconds, from a timed run of ``steps`` steps that took ``wall``
    and logged ``per_step`` seconds a step in each window of ``window`` steps (the last window: the steps left). The
    step is the median of the windows after the first; the first window's time beyond it (warm-up) counts with the
    start, and the slowest later window's, which holds the middle round, is the round."""
    held = [min(window, steps - k * window) for k in range(len(per_step))]
    step = statistics.median(per_step[1:])
    extra = [n * (s - step) for n, s in zip(held, per_step)]
    return max(0.0, wall - steps * step - sum(extra[1:])), step, max(extra[1:])


def _score_seconds(cfg: Any, run_dir: Path, case: str) -> float:
    """Seconds to score ``case`` with the run in ``run_dir`` as a scoring unit does (predicted as trained and with the
    encoder zeroed, its Dice, HD95 and NSD, at the predictor's own overlap)."""
    root, layout = dataset_root(cfg.data)
    by_id = {c.id: c for c in discover(layout, root, on_bad_case=str(cfg.data.on_bad_case), validate="header")}
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        transfer.score([transfer.Run("timed", 0, 0, (), (), run_dir, test=(case,))], by_id, [case], str(cfg.device))
    return time.perf_counter() - started


def measure(units: Sequence[Unit], device: str, moved: Mapping[str, str]) -> Costs:
    """`Costs` of everything ``units`` are priced under (`script`: each console script, each size of fused group),
    each timed on the first unit priced under it that reads only what exists (``moved``: planned folders a dry run
    did not write -> where they were written to time it)."""
    firsts: dict[str, Unit] = {}
    for unit in (u for u in units if u.config is not None and u.steps):
        roots = [o.split("=", 1)[1] for o in unit.config[1] if o.startswith("data.root=")]
        if all(Path(moved.get(r, r)).exists() for r in roots):  # every data.root it reads, here or where moved
            firsts.setdefault(script(unit), unit)
    gpu = device != "cpu" and torch.cuda.is_available()
    name = f"cuda ({torch.cuda.get_device_name(0)})" if gpu else f"cpu ({machine()['cpu']})"
    return Costs(name, {entry: time_unit(unit, moved) for entry, unit in firsts.items()})
