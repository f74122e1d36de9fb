"""Model folders in the layout the Hugging Face hub takes as is (imports nothing of asa outside this package).

A model folder holds three files:

=====================  =======================================================================
``model.safetensors``  the encoder export (`asa.io.save_export_safetensors`: tensors, and the
                       network spec and provenance in its metadata)
``config.json``        what built it: ``network`` (the spec of the encoder alone, the network
                       whose state dict is ``model.safetensors``), method, data, crop, spacing,
                       orientation, preprocessing, the asa version and git commit
                       (``asa_format``: ``asa.model_folder``)
``README.md``          the model card (YAML front matter with the licence and tags, then text)
=====================  =======================================================================

Beside them the formats of `asa.formats` write theirs: ``segmenter.pt`` of a fine-tuning checkpoint (the whole
network, which ``asa-predict checkpoint=<folder>`` reads: :func:`segmenter_checkpoint`), the pretraining cohort's
list ``cohort.json.gz`` (`COHORT_LIST`; the weights carry its summary), nnU-Net's and nnssl's files.

:func:`write_model_folder` writes them all or none (:func:`write_folder`). :func:`load_model_folder` reads one back as the
encoder export dict that :func:`read_weights` returns for ``encoder.pt``. A hub id
(``hf://owner/name[@revision]``) is read through ``huggingface_hub`` when it is installed (not a
dependency of asa); without it, or offline without a cached copy, the read is refused with a message.
:func:`read_weights` reads any of asa's weight files, model folders included, and published ones in nnU-Net's
terms (`asa.models.load_weights` adds their network spec).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from asa.io.atomic import _fsync_dir, atomic_write_json, atomic_write_text, default_file_mode
from asa.io.checkpoint import CheckpointError, load_checkpoint
from asa.io.export_safetensors import SAFETENSORS_SUFFIX, load_export_safetensors, save_export_safetensors
from asa.io.foreign import read_foreign
from asa.io.nifti import is_nifti, is_temporary

__all__ = ["CARD_FILE", "CONFIG_FILE", "ENCODER_ARCH", "FOLDER_FILES", "FOLDER_FORMAT", "HUB_PREFIX", "MODEL_FILE",
           "COHORT_LIST", "NNSSL_CHECKPOINT", "NNSSL_PLAN", "NNUNET_PLANS", "NNUNET_WEIGHTS", "SEGMENTER_FILE", "encoder_network_spec",
           "is_model_folder", "load_model_folder", "read_weights", "resolve_hub_id", "segmenter_checkpoint",
           "write_folder", "write_model_folder"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FOLDER_FORMAT = "asa.model_folder"
HUB_PREFIX = "hf://"
FOLDER_FILES = (CARD_FILE, CONFIG_FILE, MODEL_FILE)  # all a model folder holds, in listing order
ENCODER_ARCH = "encoder"  # the network of a model folder's weights: a source network's encoder alone
# a folder exported from a fine-tuning checkpoint also carries the whole segmenter: the network's weights, its
# spec and the run config (task, data), as asa-predict reads a best.pt / last.pt
SEGMENTER_FILE = "segmenter.pt"
NNUNET_WEIGHTS = "nnunet_pretrained_weights.pth"  # the encoder for nnUNetv2_train -pretrained_weights
NNUNET_PLANS = "nnunet_plans.json"  # the plans configuration that builds the network those weights fit
# nnssl's checkpoint and adaptation plan: with config.json, the files nnU-Net's nnssl route downloads from the hub
NNSSL_CHECKPOINT = "checkpoint_final.pth"
NNSSL_PLAN = "adaptation_plan.json"
# beside a weight file that carries a pretraining cohort: its list (the weight files hold its summary and this name)
COHORT_LIST = "cohort.json.gz"


def segmenter_checkpoint(folder: str | os.PathLike) -> Path:
    """The whole fine-tuned network of a model folder (``segmenter.pt``); any other folder is refused, saying what it
    is (`_not_a_segmenter`)."""
    path = Path(folder) / SEGMENTER_FILE
    if not path.is_file():
        raise CheckpointError(_not_a_segmenter(Path(folder)))
    return path


def _not_a_segmenter(folder: Path) -> str:
    """What ``folder``, given to asa-predict as ``checkpoint=`` and holding no ``segmenter.pt``, is: a model folder of
    an encoder, a run folder (fine-tuning or pretraining: its ``config.yaml`` says which), a data folder or neither;
    and what asa-predict reads instead."""
    wanted = "asa-predict reads a fine-tuning checkpoint (asa-finetune's checkpoints/best.pt or last.pt)"
    if is_model_folder(folder):
        return (f"model folder {folder}: no {SEGMENTER_FILE}: it carries a pretrained encoder only; asa-export a "
                "fine-tuning checkpoint (asa-finetune's best.pt or last.pt) for a folder asa-predict can use")
    ckpts = folder / "checkpoints"
    if ckpts.is_dir() or (folder / "config.yaml").is_file():
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = None
        held = [ckpts / name for name in ("best.pt", "last.pt") if (ckpts / name).is_file()]
        if (ckpts / "encoder.pt").is_file() or (isinstance(config, dict) and "method" in config):
            return f"checkpoint={folder}: an asa-pretrain run folder{_pretrained_hint(ckpts, held)}, and {wanted}"
        if not held:
            return f"checkpoint={folder}: an asa-finetune run folder with no checkpoint yet (best.pt, last.pt in " \
                   f"{ckpts})"
        both = " (the best validation round's weights; last.pt: the last step's)" if len(held) == 2 else ""
        return f"checkpoint={folder}: an asa-finetune run folder; asa-predict reads its checkpoint={held[0]}{both}"
    if image := _first_image(folder):
        return (f"checkpoint={folder}: a data folder (it holds images: {image.relative_to(folder)}), not a checkpoint; "
                f"give it as input={folder}; {wanted}")
    return f"checkpoint={folder}: a folder with no {SEGMENTER_FILE}, run or images; {wanted}, or a folder asa-export " \
           "wrote from one"


def _pretrained_hint(ckpts: Path, held: list[Path]) -> str:
    """How asa-finetune starts from the pretraining run of ``ckpts``, naming a file it holds: ``encoder.pt``, which
    the run exports when training ends, else the full checkpoint (``held``: best.pt, last.pt) of a run stopped
    before it, which asa-finetune reads as well and asa-export turns into the encoder's files."""
    if (ckpts / "encoder.pt").is_file():
        return f": its encoder is fine-tuned by asa-finetune model.pretrained={ckpts / 'encoder.pt'}"
    if held:
        return (f" stopped before it exported encoder.pt: its encoder is fine-tuned by asa-finetune "
                f"model.pretrained={held[0]} (asa-export {held[0]} OUT writes the encoder's own files)")
    return f" with no checkpoint yet (no encoder.pt, best.pt or last.pt in {ckpts})"


def _first_image(folder: Path, depth: int = 4) -> Path | None:
    """A NIfTI file within ``depth`` levels under ``folder`` (a BIDS session's anat/ is the fourth), or None."""
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_temporary(d)) if len(Path(here).relative_to(folder).parts) < depth \
            else []
        if found := next((name for name in sorted(files) if is_nifti(name) and not is_temporary(name)), None):
            return Path(here) / found
    return None


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``model.safetensors``."""
    return Path(path).is_dir() and (Path(path) / MODEL_FILE).is_file()


def encoder_network_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of the network ``model.safetensors`` holds: the encoder of the source network ``spec``
    alone (``asa.models.portable.EncoderOf``), whose state-dict keys are the export's own."""
    return {"arch": ENCODER_ARCH, "kwargs": {"network": dict(spec)}}


def _described(config: Mapping[str, Any], export: Mapping[str, Any]) -> bool:
    """Whether config.json's network is the weights' own: the encoder's spec (format 2), or the source
    network's as folders of format 1 recorded it."""
    return config.get("network") in (encoder_network_spec(export.get("network") or {}), export.get("network"))


def write_model_folder(out_dir: str | os.PathLike, export: Mapping[str, Any], config: Mapping[str, Any], card: str,
                       *, extra: Mapping[str, Callable[[Path], Any]] | None = None) -> Path:
    """Write ``model.safetensors`` (``export``: the encoder export dict), ``config.json`` and ``README.md``
    (``card``) as the folder ``out_dir``, and each of ``extra`` (a file name beside them -> its writer, called with
    the path to write), all or none (:func:`write_folder`). The caller refuses a folder holding other files and moves
    an earlier export's aside (asa-export: `asa.api.export`)."""
    out = Path(out_dir).absolute()  # "." gets its own name: the temporary folder goes beside it
    extra = dict(extra or {})
    if taken := sorted(set(extra) & set(FOLDER_FILES)):
        raise ValueError(f"model folder {out}: {', '.join(taken)} is the model folder's own file")
    if not _described(config, export):
        raise ValueError(f"model folder {out}: config.json's network spec differs from the weights' own")

    return write_folder(out, {MODEL_FILE: lambda path: save_export_safetensors(path, export),
                              CONFIG_FILE: lambda path: atomic_write_json(path, dict(config)),
                              CARD_FILE: lambda path: atomic_write_text(path, card), **extra})


def write_folder(out: Path, files: Mapping[str, Callable[[Path], Any]]) -> Path:
    """Write ``files`` (name -> its writer, called with the path to write) as the folder ``out``: all in a new folder
    beside it, then renamed into place, so a write that fails (a full disk) leaves no folder that looks finished;
    into an existing folder (``.`` included: never renamed) each file is renamed into place once all were written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, write in files.items():
            write(tmp / name)
        os.chmod(tmp, default_file_mode(folder=True))  # mkdtemp made it 0o700
        if out.is_dir():
            for name in files:
                os.replace(tmp / name, out / name)
            _fsync_dir(out)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _fsync_dir(out.parent)
    return out


def load_model_folder(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A model folder -> the encoder export dict (``encoder``, ``network``, ``source``, ``step``), plus
    ``"model_config"``: its ``config.json``. Raises CheckpointError naming the folder when a file is
    missing or unreadable, or when config.json's network spec is not the weights' own."""
    folder = Path(path)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"model folder {folder}: no {' or '.join(missing)} (asa-export writes {MODEL_FILE}, "
                              f"{CONFIG_FILE} and {CARD_FILE})")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"model folder {folder}: {CONFIG_FILE} is not readable JSON ({err})") from err
    if not isinstance(config, dict) or config.get("asa_format") != FOLDER_FORMAT:
        raise CheckpointError(f"model folder {folder}: {CONFIG_FILE} is not an asa model folder's "
                              f"(no asa_format={FOLDER_FORMAT!r}); write one with asa-export")
    export = load_export_safetensors(folder / MODEL_FILE, map_location)
    if not _described(config, export):
        raise CheckpointError(f"model folder {folder}: {CONFIG_FILE}'s network spec differs from {MODEL_FILE}'s own")
    export["model_config"] = config
    return export


def resolve_hub_id(ref: str) -> Path:
    """``hf://owner/name[@revision]`` -> the local folder of that hub repository, through
    ``huggingface_hub`` (downloaded, or its cached copy when offline: ``HF_HUB_OFFLINE=1``).
    Refused with a message when ``huggingface_hub`` is not installed or the model cannot be had."""
    if not ref.startswith(HUB_PREFIX) or "/" not in ref[len(HUB_PREFIX):]:
        raise ValueError(f"{ref!r} is not a hub id; expected {HUB_PREFIX}owner/name[@revision]")
    repo_id, _, revision = ref[len(HUB_PREFIX):].partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{ref}: reading a model from the Hugging Face hub needs huggingface_hub "
                              "(pip install huggingface_hub); or download the folder and give its path") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        folder = snapshot_download(repo_id, revision=revision or None, local_files_only=offline,
                                   allow_patterns=[MODEL_FILE, CONFIG_FILE, CARD_FILE, COHORT_LIST])
    except Exception as err:  # offline, unknown repository, no access: one message naming the id
        where = "no cached copy (HF_HUB_OFFLINE is set)" if offline else "not reachable or not found"
        raise CheckpointError(f"{ref}: {where} ({type(err).__name__}: {err}); download the folder and give its "
                              "path instead") from err
    return Path(folder)


def read_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A pretraining checkpoint or encoder export as a dict: ``.safetensors`` files through
    :func:`load_export_safetensors`, a model folder of ``asa-export`` (or a hub id
    ``hf://owner/name``, with ``huggingface_hub`` installed) through :func:`load_model_folder`,
    anything else through ``asa.io.load_checkpoint`` (weights only); a published checkpoint (nnssl / OpenMind,
    nnU-Net v2, AMAES: `asa.io.foreign`) comes back as an encoder export without its network spec, its network
    in nnU-Net's terms and its adaptation plan under ``"foreign"`` (`asa.models.load_weights`: with the spec)."""
    if isinstance(path, str) and path.startswith(HUB_PREFIX):
        path = resolve_hub_id(path)
    if Path(path).is_dir():
        return load_model_folder(path, map_location)
    if Path(path).suffix.lower() == SAFETENSORS_SUFFIX:
        return load_export_safetensors(path, map_location)
    state = load_checkpoint(path, map_location)
    return read_foreign(path, state) or state
