"""Prediction as a Python function: the job behind `asa-predict` (outputs in each input's own space), which
the fine-tuning task a checkpoint records runs (`asa.api.machinery.prediction.PredictionJob.predict`: the output folder,
its manifest, resume and overwrite)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.configuration.compat import current_config
from asa.api.machinery.rundir import override
from asa.api.machinery.run import OptionError, refusing
from asa.api.machinery.prediction import PredictSetup
from asa.api.configuration.schema import PredictConfig
from asa.api.tasks import finetune_task
from asa.eval.inference import check_sw_batch_size
from asa.formats.onnx import onnx_state
from asa.io import load_checkpoint
from asa.io.hub import segmenter_checkpoint
from asa.train.distributed import resolve_device
from asa.train.environment import environment, environment_warnings
from asa.train.precision import resolve_amp, set_threads
from asa.train.resume import written_by

__all__ = ["predict"]


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


def _nnunet_results(checkpoint: Path) -> Path | None:
    """The nnU-Net v2 results folder that ``checkpoint`` is, or whose fold (``fold_all``) or fold's checkpoint
    (``fold_all/checkpoint_final.pth``) it is: plans.json and dataset.json beside ``fold_*/checkpoint_*.pth``; None
    otherwise."""
    fold = checkpoint.parent if checkpoint.is_file() else checkpoint
    folder = fold.parent if fold.name.startswith("fold_") else checkpoint
    held = folder.is_dir() and (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
    return folder if held and any(folder.glob("fold_*/checkpoint_*.pth")) else None


def _nnunet_refusal(folder: Path, given: Path) -> str:
    """What the nnU-Net results ``folder`` is (asa-export's ``--format nnunet-results`` writes one) and the commands
    of nnU-Net's predictor that run it; asa-predict reads the fine-tuning checkpoint it was exported from."""
    try:
        plans = json.loads((folder / "plans.json").read_text())
        dataset = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        plans, dataset = {}, {}
    name = str(plans.get("dataset_name") or "Dataset<id>_<name>")
    configurations = list(plans.get("configurations") or {}) or ["3d_fullres"]
    parts = folder.name.split("__")  # nnU-Net's own folder: <trainer>__<plans>__<configuration>
    trainer, plans_name, configuration = parts if len(parts) == 3 else (
        "nnUNetTrainer", str(plans.get("plans_name") or "nnUNetPlans"), configurations[0])
    folds = sorted(p.name.removeprefix("fold_") for p in folder.glob("fold_*") if any(p.glob("checkpoint_*.pth")))
    number = re.match(r"Dataset(\d{3})_", name)
    options = " ".join([*([f"-tr {trainer}"] if trainer != "nnUNetTrainer" else []),
                        *([f"-p {plans_name}"] if plans_name != "nnUNetPlans" else []), f"-f {' '.join(folds)}"])
    source = (dataset.get("asa") or {}).get("source") if isinstance(dataset.get("asa"), dict) else None
    written = f"; asa-export wrote it from {source.get('file')} (step {source.get('step')})" \
        if isinstance(source, dict) and source.get("file") else ""
    return (f"checkpoint={given}: an nnU-Net v2 results folder ({name}, {trainer}__{plans_name}__{configuration}, "
            f"fold {', '.join(folds)}{written}), which nnU-Net's predictor runs, not asa-predict: "
            f"nnUNetv2_predict_from_modelfolder -i IMAGES -o PREDICTIONS -m {folder} {options}, or with the folder "
            f"placed as $nnUNet_results/{name}/{trainer}__{plans_name}__{configuration}: nnUNetv2_predict -i IMAGES "
            f"-o PREDICTIONS -d {number.group(1) if number else '<id>'} -c {configuration} {options} (images named "
            f"<case>_0000.nii.gz, ...). asa-predict reads the fine-tuning checkpoint (best.pt, last.pt) it came from")


def _no_task(state: Mapping, checkpoint: Path) -> str:
    """Why ``checkpoint`` (its content: ``state``), which records no fine-tuning task, predicts nothing, and what to
    give instead: a pretraining checkpoint or an encoder export is fine-tuned first (``model.pretrained``)."""
    encoder = checkpoint.parent / "encoder.pt"
    start = encoder if checkpoint.parent.name == "checkpoints" and encoder.is_file() else checkpoint
    finetune = (f"give a fine-tuned checkpoint (asa-finetune's checkpoints/best.pt or last.pt), or fine-tune this "
                f"encoder first: asa-finetune data=... {override('model.pretrained', start)}")
    if written_by(state) == "asa-pretrain":
        return f"checkpoint={checkpoint}: a pretraining checkpoint (asa-pretrain's), which predicts no labels; {finetune}"
    if "encoder" in state:
        return f"checkpoint={checkpoint}: an encoder export, which predicts no labels; {finetune}"
    return (f"checkpoint={checkpoint}: records no fine-tuning task (config.outputs), so it is no checkpoint of "
            "asa-finetune; asa-predict reads asa-finetune's checkpoints/best.pt or last.pt, or a folder asa-export "
            "wrote from one")


def predict(config: PredictConfig | DictConfig) -> list[Path]:
    """Predict as configured (asa-predict); returns the label files written by this call (kept ones
    of a ``resume=true`` run are not among them).

    ``config``: the typed config (PredictConfig, e.g. from ``load_config("predict")``) or a composed
    Hydra config; it is checked against the schema first. Every option is checked, the checkpoint
    loaded and the cases found before anything is written; a bad option raises `OptionError`, an
    output folder that cannot be used `asa.api.machinery.rundir.RunDirError`. The fine-tuning task the checkpoint
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
        if (results := _nnunet_results(checkpoint)) is not None:
            raise OptionError(_nnunet_refusal(results, checkpoint))
        if checkpoint.is_dir():  # a model folder of asa-export with the whole segmenter
            checkpoint = segmenter_checkpoint(checkpoint)
        if checkpoint.suffix == ".onnx":  # asa-export --format onnx: the network runs in onnxruntime (CPU, fp32)
            state = onnx_state(checkpoint)
            setup = dataclasses.replace(setup, device=resolve_device("cpu"), amp_dtype=None, compile=False)
        else:
            state = load_checkpoint(checkpoint)
        if isinstance(state.get("config"), Mapping):  # as this version reads it (an earlier one's record: outputs)
            state["config"] = current_config(state["config"])
        recorded = ((state.get("config") or {}).get("outputs") or {}).get("name")
        if recorded is None:
            raise OptionError(_no_task(state, checkpoint))
        task = finetune_task(str(recorded), option=f"checkpoint={checkpoint}: its task")
    return task.predict(cfg, state, checkpoint, inputs, setup)
