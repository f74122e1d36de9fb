"""The one order of a prediction, every fine-tuning task's: `PredictionJob.predict` runs it (the inputs, the
output folder and its manifest, resume and overwrite, the per-case loop), and a task overrides the hooks of
what it changes (`predict_case` writes one case's predictions).

An output folder holds the predictions of one checkpoint, recorded in ``<output>/predictions.json``
(the checkpoint's path and SHA-256 per case, the settings and the command of each run). A folder that
already holds predictions is refused unless ``overwrite=true`` (the old folder is moved aside to
``<output>.replaced-<time>``, nothing is deleted) or ``resume=true`` (continue with the same
checkpoint: the cases it already wrote are kept). One job writes a folder at a time (``<output>/run.lock``);
every check runs before anything but the lock is written.

A killed job (SIGKILL, a lost node) leaves nothing that a resume would read half-written or predict again
complete: a case's files are written in the hidden ``<output>/.writing/``, its record (with each file's SHA-256,
under ``pending``) is written next, and only then are the files renamed into ``<output>``. A resume keeps a
pending case only if every file in place has the recorded content; the next start removes what a killed write
left in ``.writing/`` and the atomic writer's temporaries, saying so in one line.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from asa.api.machinery.dataset import cases_of_split
from asa.api.machinery.rundir import (LOCK_NAME, RunDirError, RunLock, check_writable, command_line, held_refusal,
                                     move_aside, sweep_temporaries)
from asa.api.machinery.run import refusing
from asa.api.configuration.schema import PredictConfig
from asa.eval.progress import CaseProgress
from asa.io import atomic_write_json
from asa.io import VolumeError

__all__ = ["MANIFEST", "STAGE", "PredictSetup", "PredictionJob", "check_output", "check_output_path", "sha256"]

APP = "asa-predict"
MANIFEST = "predictions.json"
STAGE = ".writing"  # where a case's files are written before they are renamed into the output folder


@dataclass(frozen=True)
class PredictSetup:
    """What `asa-predict` resolved before it read which task a checkpoint holds: the device, the autocast
    precision (None: fp32), the CPU threads, the sliding-window batch and whether to compile."""

    device: torch.device
    amp_dtype: torch.dtype | None
    threads: int
    sw_batch_size: int
    compile: bool


def sha256(path: Path) -> str:
    """The SHA-256 of a file (a checkpoint), as the predictions' manifest records it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_path(out: Path, inputs: list[str] | str) -> None:
    """Refuse an output that is a file, or inside an input folder (or the folder of an input file)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output={out} is a file, not a folder")
    items = [Path(str(p)).expanduser().absolute() for p in ([inputs] if isinstance(inputs, str) else inputs)]
    for item in items:
        folder = item if item.is_dir() else item.parent
        if _inside(out, folder) if item.is_dir() else out == folder:
            raise RunDirError(f"output={out} is inside the input {folder}: predictions would be mixed into the data "
                              "(and read as data later); write them to a folder outside it")


def check_output(out: Path, *, overwrite: bool, resume: bool, checksum: str,
                 held: Sequence[str]) -> tuple[dict, set[str]]:
    """Refuse the output folder ``out`` (locked by `predict`) holding predictions unless asked; returns the manifest
    to continue (resume) and the case ids whose predictions are kept. ``held``: the prediction files in ``out``
    (`PredictionJob.prediction_files`)."""
    held = sorted(held)
    manifest_path = out / MANIFEST
    manifest = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise RunDirError(f"{manifest_path}: unreadable ({err}); move it or the folder away") from err
    if not held and not manifest:
        return {}, set()
    if overwrite:
        return {}, set()
    recorded = manifest.get("cases", {}) if isinstance(manifest, dict) else {}
    if not resume:
        by = sorted({c.get("checkpoint", "?") for c in recorded.values()})
        raise RunDirError(held_refusal(
            out, held or [MANIFEST], app=APP, what="predictions", by=f"; written by {', '.join(by)}" if by else "",
            more=["continue predicting with the same checkpoint, keeping its predictions: ... resume=true"]))
    foreign = sorted(cid for cid, c in recorded.items() if c.get("checkpoint_sha256") != checksum)
    if foreign:
        raise RunDirError(f"resume=true: output={out} holds predictions of another checkpoint "
                          f"({', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''} by "
                          f"{recorded[foreign[0]].get('checkpoint')}); use overwrite=true or another output")
    files = {f for c in recorded.values() for f in c.get("files", [])}
    unknown = [name for name in held if name not in files]
    if unknown:
        raise RunDirError(f"resume=true: output={out} holds predictions that {MANIFEST} does not record "
                          f"({', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''}): it cannot tell which "
                          "checkpoint wrote them; use overwrite=true or another output")
    pending = (manifest.get("pending") or {}) if isinstance(manifest, dict) else {}

    def complete(cid: str, names: list[str]) -> bool:
        # a pending case was recorded before its files were renamed into place: a kill may have come before any
        # of them, so a file there may be an older one of the same name; only the recorded content proves it
        return all((out / f).is_file() for f in names) and (
            cid not in pending or all(sha256(out / f) == pending[cid].get(f) for f in names))

    kept = {cid for cid, c in recorded.items() if complete(cid, c.get("files", []))}
    return manifest, kept


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class PredictionJob:
    """A prediction job: `predict` writes a checkpoint's predictions for the cases of the inputs, one case at a
    time (`predict_case`), into an output folder it records (`MANIFEST`). An instance serves one call, so its
    hooks may keep on it what they read for later hooks."""

    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        """Predict with the fine-tuning checkpoint ``checkpoint`` (its content: ``state``, its run config as this
        version reads it) on ``inputs``; returns the files written by this call (kept ones of a ``resume=true``
        run are not among them). The one order:

        1. the network (`load_predictor`), the cases of the inputs (`prediction_cases`; with ``split_file``,
           those of ``subset``), the output folder locked and checked against its manifest (resume, overwrite):
           nothing but the lock is written before every check passed;
        2. the start line (`describe`), the old folder moved aside (``overwrite``), what a killed job left removed,
           the manifest's new run;
        3. each case not kept (`start`, then `predict_case` into ``.writing/``), recorded in the manifest, then
           renamed into the folder, a case whose volumes cannot be used stopping the batch or skipped
           (``on_bad_case``); a stop signal keeps the predictions written so far, recorded;
        4. the closing lines (`summary`)."""
        with refusing():
            self.load_predictor(cfg, state, checkpoint, setup)
            cases = self.prediction_cases(cfg, inputs)
            cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=f"input={inputs}")
            checksum = sha256(checkpoint)
            out = Path(cfg.output).expanduser().absolute()
            check_output_path(out, inputs)
            check_writable(out, "output")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out, option="output")
        try:
            lock.acquire(command_line(APP))
            manifest, kept = check_output(out, overwrite=cfg.overwrite, resume=bool(cfg.resume), checksum=checksum,
                                          held=self.prediction_files(out))
        except BaseException:
            lock.release()
            if created and not any(out.iterdir()):
                out.rmdir()
            raise
        try:
            return self._predict(cfg, cases, out, lock, manifest, kept,
                                 {"checkpoint": str(checkpoint), "checkpoint_sha256": checksum,
                                  "settings": self.prediction_settings(cfg, setup)}, setup)
        finally:
            lock.release()

    def _predict(self, cfg: PredictConfig, cases: list, out: Path, lock: RunLock, manifest: dict, kept: set[str],
                 record: dict, setup: PredictSetup) -> list[Path]:
        """`predict` from step 2 on, with the lock on ``out`` held."""
        print(self.describe(cfg, cases, setup), flush=True)
        if cfg.overwrite and any(p.name != LOCK_NAME for p in out.iterdir()):
            lock.release()
            aside = move_aside(out)
            (aside / LOCK_NAME).unlink(missing_ok=True)
            out.mkdir()
            lock.acquire(command_line(APP))
            print(f"[asa] overwrite=true: moved the previous predictions to {aside}", file=sys.stderr, flush=True)
        sweep_temporaries(out, lock, "prediction", stage=STAGE)
        if kept:
            print(f"[asa] resume=true: keeping {len(kept & {c.id for c in cases})} prediction(s) this checkpoint "
                  f"already wrote in {out}", flush=True)
        pending = {cid: files for cid, files in (manifest.get("pending") or {}).items() if cid not in kept}
        manifest = {"format": "asa-predictions", "version": 1, "cases": dict(manifest.get("cases", {})),
                    "runs": list(manifest.get("runs", [])), "pending": pending}
        manifest["runs"].append({"time": _now(), "command": command_line(APP, drop=()), **record})
        written: list[Path] = []
        todo = [c for c in cases if c.id not in kept]
        skipped: list[tuple[str, str]] = []
        stage = out / STAGE
        stage.mkdir(exist_ok=True)
        self.start(cfg, out, {c.id for c in cases} & kept)
        progress = CaseProgress(len(todo), desc="predict", verb="predicted")  # a bar on a terminal, else a line a case
        try:
            for case in todo:
                try:
                    files = self.predict_case(cfg, case, stage, setup)
                except VolumeError as err:
                    if cfg.on_bad_case == "error":
                        raise VolumeError(err.path, f"{err.fault} (case {case.id}; on_bad_case=skip predicts the "
                                                    "other cases)") from err
                    skipped.append((case.id, str(err)))
                    progress.advance(None)
                    continue
                # the record first, then the files into place: a kill between the two leaves the case pending, which
                # a resume keeps only where each file in place has the recorded content (`check_output`); the other
                # order would leave complete files no record proves
                manifest["cases"][case.id] = {"files": [f.name for f in files], **record, "written": _now()}
                pending[case.id] = {f.name: sha256(f) for f in files}
                atomic_write_json(out / MANIFEST, manifest)  # after each case: an interrupted batch stays recorded
                for f in files:
                    os.replace(f, out / f.name)
                del pending[case.id]  # said by the next write of the manifest
                written.append(out / files[0].name)
                progress.advance(case.id)
        except SystemExit as stop:  # a stop signal: the predictions written so far stay, recorded
            stop.kept = (f"{len(written)} of {len(todo)} prediction(s) written in this run to {out}, recorded in "
                         f"{MANIFEST}; continue with the same command and resume=true")
            raise
        finally:
            progress.close()
            with contextlib.suppress(OSError):  # not empty: a write that failed left a file, removed at the next start
                stage.rmdir()
        manifest["runs"][-1].update(written=len(written), kept=len(cases) - len(todo),
                                    skipped=[{"id": cid, "reason": reason} for cid, reason in skipped])
        atomic_write_json(out / MANIFEST, manifest)
        print(self.summary(out, len(written), len(cases) - len(todo)) + f"; record: {out / MANIFEST}", flush=True)
        if skipped:
            print(f"[asa] skipped {len(skipped)} case(s) (on_bad_case=skip; listed in {out / MANIFEST}):\n"
                  + "\n".join(f"  - {cid}: {reason}" for cid, reason in skipped), file=sys.stderr, flush=True)
        return list(dict.fromkeys(written))

    # --- the hooks of `predict` --------------------------------------------------------------------
    def load_predictor(self, cfg: PredictConfig, state: dict, checkpoint: Path, setup: PredictSetup) -> None:
        """Build the network of ``state`` (the checkpoint's content) for the later hooks; nothing is written."""
        raise NotImplementedError(f"{type(self).__name__}: no load_predictor (or override predict)")

    def prediction_cases(self, cfg: PredictConfig, inputs: list[str] | str) -> list:
        """The cases of ``inputs`` (``cfg.layout``, ``cfg.on_bad_case``); an input the task cannot read is refused."""
        raise NotImplementedError(f"{type(self).__name__}: no prediction_cases (or override predict)")

    def prediction_files(self, out: Path) -> list[str]:
        """The names of the prediction files of this task in the existing folder ``out``."""
        return []

    def describe(self, cfg: PredictConfig, cases: list, setup: PredictSetup) -> str:
        """The start line (and any note on stderr before it)."""
        return f"[asa] predicting {len(cases)} case(s) on {setup.device}"

    def prediction_settings(self, cfg: PredictConfig, setup: PredictSetup) -> dict[str, Any]:
        """The settings the manifest records with each case."""
        return {}

    def start(self, cfg: PredictConfig, out: Path, kept: set[str]) -> None:
        """Before the first case: ``out`` exists, ``kept`` are the ids of the cases whose predictions stay."""

    def predict_case(self, cfg: PredictConfig, case: Any, out: Path, setup: PredictSetup) -> list[Path]:
        """Write the predictions of one case to ``out`` (the output folder's ``.writing/``, from where `predict`
        renames them into place); returns its files (the first one is the case's prediction). Raises
        `asa.io.nifti.VolumeError` for a case whose volumes cannot be used."""
        raise NotImplementedError(f"{type(self).__name__}: no predict_case (or override predict)")

    def summary(self, out: Path, written: int, kept: int) -> str:
        """The closing line: ``written`` predictions in this call, ``kept`` from before."""
        return f"[asa] wrote {written} prediction(s) to {out}{f', kept {kept} from before' if kept else ''}"
