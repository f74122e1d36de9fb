"""Prediction as a Python function: the job behind `asa-predict` (outputs in each input's own space).

An output folder holds the predictions of one checkpoint, recorded in ``<output>/predictions.json``
(the checkpoint's path and SHA-256 per case, the settings and the command of each run). A folder that
already holds predictions is refused unless ``overwrite=true`` (the old folder is moved aside to
``<output>.replaced-<time>``, nothing is deleted) or ``resume=true`` (continue with the same
checkpoint: the cases it already wrote are kept). Every check runs before anything is written.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from asa.api.common import OptionError, cases_of_split, refusing
from asa.api.rundir import RunDirError, check_writable, command_line, move_aside, override
from asa.api.schema import PredictConfig, as_config
from asa.api.tasks import PredictSetup, finetune_task
from asa.eval.inference import check_sw_batch_size
from asa.eval.predict import Predictor, gather_cases, predict_cases
from asa.io import atomic_write_json, is_nifti, load_checkpoint
from asa.io.hub import segmenter_checkpoint
from asa.train.distributed import resolve_device
from asa.train.precision import amp_name, resolve_amp, set_threads

__all__ = ["MANIFEST", "predict", "predict_segmentation"]

APP = "asa-predict"
MANIFEST = "predictions.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_options(cfg: PredictConfig) -> list[str] | str:
    """The inputs as given; refuses an empty input list and an overlap outside [0, 1)."""
    inputs = [str(i) for i in cfg.input] if isinstance(cfg.input, list) else str(cfg.input)
    if isinstance(inputs, list) and not inputs:
        raise OptionError("input=[]: no files given; pass a dataset folder, a folder of NIfTI files, a file or "
                          "a list of files")
    raw = cfg.overlap
    if not 0.0 <= float(raw) < 1.0:
        raise OptionError(f"overlap={raw}: expected a fraction of the window in [0, 1) "
                          "(0: windows side by side, 0.5: half a window shared)")
    if cfg.overwrite and cfg.resume:
        raise OptionError("overwrite=true replaces the predictions in output and resume=true keeps them: pass one")
    return inputs


def _check_output(out: Path, inputs: list[str] | str, *, overwrite: bool, resume: bool,
                  checksum: str) -> tuple[dict, set[str]]:
    """Refuse an output inside an input folder, or one holding predictions unless asked; returns the
    manifest to continue (resume) and the case ids whose predictions are kept."""
    items = [Path(str(p)).expanduser().absolute() for p in ([inputs] if isinstance(inputs, str) else inputs)]
    for item in items:
        folder = item if item.is_dir() else item.parent
        if _inside(out, folder) if item.is_dir() else out == folder:
            raise RunDirError(f"output={out} is inside the input {folder}: predictions would be mixed into the data "
                              "(and read as data later); write them to a folder outside it")
    if not out.exists():
        return {}, set()
    if not out.is_dir():
        raise RunDirError(f"output={out} is a file, not a folder")
    held = sorted(p.name for p in out.iterdir() if is_nifti(p))
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
    shown = ", ".join(held[:4]) + (f", ... ({len(held)} files)" if len(held) > 4 else "")
    if not resume:
        by = sorted({c.get("checkpoint", "?") for c in recorded.values()})
        raise RunDirError(
            f"output={out} already holds predictions ({shown or MANIFEST}"
            f"{'; written by ' + ', '.join(by) if by else ''}); writing there would replace or mix them, so "
            f"nothing was written.\n"
            f"  write elsewhere:        {command_line(APP, drop=('output', 'overwrite', 'resume'))} "
            f"{override('output', f'{out}-new')}\n"
            f"  replace them (the old folder is moved to {out.name}.replaced-<time>): ... overwrite=true\n"
            f"  continue predicting with the same checkpoint, keeping its predictions: ... resume=true")
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
    kept = {cid for cid, c in recorded.items() if all((out / f).is_file() for f in c.get("files", []))}
    return manifest, kept


def _channel_note(cases: Sequence, task) -> str | None:
    """Which of the inputs' channels the checkpoint's task reads, when the cases hold more than it uses."""
    offered = sorted({name for c in cases for name in c.images}, key=str)
    extra = [name for name in offered if name not in task.channels]
    if not extra:
        return None
    return (f"the checkpoint's task {task.name} reads {len(task.channels)} channel(s): {', '.join(task.channels)}; "
            f"the inputs also hold {', '.join(extra)}, which are not used")


def predict(config: PredictConfig | DictConfig) -> list[Path]:
    """Predict as configured (asa-predict); returns the label files written by this call (kept ones
    of a ``resume=true`` run are not among them).

    ``config``: the typed config (PredictConfig, e.g. from ``load_config("predict")``) or a composed
    Hydra config; it is checked against the schema first. Every option is checked, the checkpoint
    loaded and the cases found before anything is written; a bad option raises `OptionError`, an
    output folder that cannot be used `asa.api.rundir.RunDirError`. The fine-tuning task the checkpoint
    records (`asa.api.tasks`) writes the predictions."""
    with refusing():
        cfg = as_config(config, "predict")
        inputs = _check_options(cfg)
        sw_batch_size = check_sw_batch_size(cfg.sw_batch_size)
        device = resolve_device(cfg.device)
        amp_dtype = resolve_amp(cfg.amp, device, option="amp")
        threads = set_threads(cfg.threads, option="threads")
        setup = PredictSetup(device=device, amp_dtype=amp_dtype, threads=threads, sw_batch_size=sw_batch_size,
                             compile=cfg.compile)
        checkpoint = Path(str(cfg.checkpoint)).expanduser().absolute()
        if checkpoint.is_dir():  # a model folder of asa-export with the whole segmenter
            checkpoint = segmenter_checkpoint(checkpoint)
        state = load_checkpoint(checkpoint)
        recorded = ((state.get("config") or {}).get("task") or {}).get("name")
        task = finetune_task(str(recorded), option=f"checkpoint={checkpoint}: its task")
    return task.predict(cfg, state, checkpoint, inputs, setup)


def predict_segmentation(cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                         setup: PredictSetup) -> list[Path]:
    """Write one label file per case of ``inputs`` (and the manifest) with the segmentation checkpoint
    ``checkpoint`` (its content: ``state``); returns the files written by this call."""
    device, amp_dtype, threads, sw_batch_size = setup.device, setup.amp_dtype, setup.threads, setup.sw_batch_size
    compile_net = setup.compile
    with refusing():
        predictor = Predictor.from_checkpoint(checkpoint, device=device, amp_dtype=amp_dtype, compile=compile_net,
                                              state=state)
        on_bad_case = cfg.on_bad_case
        cases = gather_cases(inputs, predictor.task, layout=cfg.layout, on_bad_case=on_bad_case)
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=f"input={inputs}")
        checksum = _sha256(checkpoint)
        out = Path(cfg.output).expanduser().absolute()
        manifest, kept = _check_output(out, inputs, overwrite=cfg.overwrite, resume=bool(cfg.resume),
                                       checksum=checksum)
        check_writable(out, "output")
    print(f"[asa] predicting {len(cases)} case(s) on {device}, precision {amp_name(amp_dtype)} (amp={cfg.amp}), "
          f"{threads} CPU threads{', torch.compile' if compile_net else ''}"
          f"{f'; the {cfg.subset} split of {cfg.split_file}' if cfg.split_file is not None else ''}", flush=True)
    note = _channel_note(cases, predictor.task)
    if note:
        print(f"[asa] note: {note}", file=sys.stderr, flush=True)
    if cfg.overwrite and out.exists() and any(out.iterdir()):
        aside = move_aside(out)
        print(f"[asa] overwrite=true: moved the previous predictions to {aside}", file=sys.stderr, flush=True)
    if kept:
        print(f"[asa] resume=true: keeping {len(kept & {c.id for c in cases})} prediction(s) this checkpoint "
              f"already wrote in {out}", flush=True)
    record = {
        "checkpoint": str(checkpoint), "checkpoint_sha256": checksum,
        "settings": {"overlap": cfg.overlap, "tta": cfg.tta,
                     "tta_axes": list(cfg.tta_axes) if cfg.tta else [], "amp": amp_name(amp_dtype)},
    }
    manifest = {"format": "asa-predictions", "version": 1, "cases": dict(manifest.get("cases", {})),
                "runs": list(manifest.get("runs", []))}
    manifest["runs"].append({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                             "command": command_line(APP, drop=()), **record})
    written: list[Path] = []
    todo = [c for c in cases if c.id not in kept]
    progress = sys.stderr.isatty()
    start = time.perf_counter()

    def on_written(case, files: list[Path]) -> None:
        written.append(files[0])
        manifest["cases"][case.id] = {"files": [f.name for f in files], **record,
                                      "written": datetime.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(out / MANIFEST, manifest)  # after each case: an interrupted batch stays recorded
        if not progress:  # a log file: one line per case instead of the bar
            print(f"[asa] predicted {len(written)}/{len(todo)}: {case.id} "
                  f"({time.perf_counter() - start:.0f} s elapsed)", file=sys.stderr, flush=True)

    skipped: list[tuple[str, str]] = []
    try:
        predict_cases(
            predictor, todo, out, overlap=cfg.overlap, sw_batch_size=sw_batch_size,
            tta_axes=list(cfg.tta_axes) if cfg.tta else [], save_probabilities=cfg.save_probabilities,
            on_bad_case=on_bad_case, skipped=skipped, progress=progress, on_written=on_written,
        )
    except SystemExit as stop:  # a stop signal: the predictions written so far stay, recorded
        stop.kept = (f"{len(written)} of {len(todo)} prediction(s) written in this run to {out}, recorded in "
                     f"{MANIFEST}; continue with the same command and resume=true")
        raise
    manifest["runs"][-1].update(written=len(written), kept=len(cases) - len(todo),
                                skipped=[{"id": cid, "reason": reason} for cid, reason in skipped])
    atomic_write_json(out / MANIFEST, manifest)
    print(f"[asa] wrote {len(written)} prediction(s) ({predictor.task.name}: "
          f"{', '.join(predictor.task.output_names)}) to {out}"
          f"{f', kept {len(cases) - len(todo)} from before' if len(todo) < len(cases) else ''}; "
          f"record: {out / MANIFEST}", flush=True)
    if skipped:
        print(f"[asa] skipped {len(skipped)} case(s) (on_bad_case=skip; listed in {out / MANIFEST}):\n"
              + "\n".join(f"  - {cid}: {reason}" for cid, reason in skipped), file=sys.stderr, flush=True)
    return written
