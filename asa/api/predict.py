"""Prediction as a Python function: the job behind `asa-predict` (outputs in each input's own space).

An output folder holds the predictions of one checkpoint, recorded in ``<output>/predictions.json``
(the checkpoint's path and SHA-256 per case, the settings and the command of each run). A folder that
already holds predictions is refused unless ``overwrite=true`` (the old folder is moved aside to
``<output>.replaced-<time>``, nothing is deleted) or ``resume=true`` (continue with the same
checkpoint: the cases it already wrote are kept). Every check runs before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from asa.api.checks import as_config
from asa.api.compat import current_config
from asa.api.run import OptionError, refusing
from asa.api.rundir import RunDirError, command_line, override
from asa.api.schema import PredictConfig
from asa.api.tasks import PredictSetup, finetune_task
from asa.eval.inference import check_sw_batch_size
from asa.io import is_nifti, load_checkpoint
from asa.io.hub import segmenter_checkpoint
from asa.train.distributed import resolve_device
from asa.train.environment import environment, environment_warnings
from asa.train.precision import resolve_amp, set_threads

__all__ = ["MANIFEST", "channel_note", "check_output", "predict", "sha256"]

APP = "asa-predict"
MANIFEST = "predictions.json"


def sha256(path: Path) -> str:
    """The SHA-256 of a file (a checkpoint), as the predictions' manifest records it."""
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


def check_output(out: Path, inputs: list[str] | str, *, overwrite: bool, resume: bool,
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


def channel_note(cases: Sequence, task) -> str | None:
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
        if device.type == "cuda":  # known-bad torch / cuDNN versions for 3D convolutions, each with its fix
            for line in environment_warnings(environment(), device=device, amp=amp_dtype):
                print(f"[asa-predict] warning: {line}", file=sys.stderr, flush=True)
        threads = set_threads(cfg.threads, option="threads")
        setup = PredictSetup(device=device, amp_dtype=amp_dtype, threads=threads, sw_batch_size=sw_batch_size,
                             compile=cfg.compile)
        checkpoint = Path(str(cfg.checkpoint)).expanduser().absolute()
        if checkpoint.is_dir():  # a model folder of asa-export with the whole segmenter
            checkpoint = segmenter_checkpoint(checkpoint)
        state = load_checkpoint(checkpoint)
        if isinstance(state.get("config"), Mapping):  # as this version reads it (an earlier one's record: outputs)
            state["config"] = current_config(state["config"])
        recorded = ((state.get("config") or {}).get("outputs") or {}).get("name")
        task = finetune_task(str(recorded), option=f"checkpoint={checkpoint}: its task")
    return task.predict(cfg, state, checkpoint, inputs, setup)
