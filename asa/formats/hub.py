"""The model folder the Hugging Face hub takes as is (`asa.io.hub`: ``model.safetensors``, ``config.json``, the card
``README.md``), with the whole segmenter (``segmenter.pt``) of a fine-tuning checkpoint and the pretraining cohort's
list (``cohort.json.gz``); ``config.json`` is written here (:func:`model_config`) and read by `asa.io.hub`."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asa
from asa.data.cohort_list import write_cohort_list
from asa.data.preprocessing import run_percentiles
from asa.formats.base import FOLDER, Format, Job, Part, register_format
from asa.formats.card import ASA_CITATION, folder_licence, git_commit, segmenter_card
from asa.io import save_checkpoint
from asa.io.hub import (CARD_FILE, COHORT_LIST, CONFIG_FILE, FOLDER_FORMAT, MODEL_FILE, SEGMENTER_FILE,
                        encoder_network_spec)
from asa.models.declared import crop_edges

__all__ = ["HUB", "model_config"]


# the run's data settings a model folder repeats; size / patch_size: the crop of runs before data.crop, as recorded
DATA_KEYS = ("name", "layout", "task", "channels", "crop", "size", "patch_size", "resample_mm", "lr_centre")


SOFTWARE = ("torch", "monai", "numpy", "dynamic-network-architectures")  # their versions in config.json


def model_config(source: Path, state: Mapping[str, Any], export: Mapping[str, Any], *, license: str | None,
                 cohort: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json``: the network ``model.safetensors`` holds (the encoder alone; ``source_network``: the one it was
    trained in) and what built it (``run``: the run config; method, data, crop, spacing, preprocessing, ``metrics``),
    the pretraining ``cohort``'s summary, the licence (:func:`asa.formats.card.folder_licence`), asa's version and
    commit. A re-exported folder keeps its record; a published file (`asa.io.foreign`) its own plan, trainer,
    citations and licence (:func:`_published_config`)."""
    kept = state.get("model_config") or {}  # re-exporting a model folder keeps what it recorded
    if kept:
        if kept.get("network") == export["network"]:  # a folder of format 1 recorded the source network
            kept = {**kept, "network": encoder_network_spec(export["network"]), "source_network": export["network"],
                   "format_version": 2}
        if cohort is None and isinstance(kept.get("pretraining_cohort"), Mapping):  # a folder that carried none
            cohort = {**kept["pretraining_cohort"], "carried": "none"}
        recorded = (kept.get("published") or {}).get("license")
        if not kept.get("published"):  # asa's own folder, exported before it carried its citation
            kept = {"citations": [dict(ASA_CITATION)], **kept}
        return {**kept, **({"pretraining_cohort": dict(cohort)} if cohort else {}), "software": _software(),
                "license": folder_licence(license, source, recorded=recorded, kept=kept.get("license")),
                "asa_version": asa.__version__, "git_commit": git_commit() or kept.get("git_commit")}
    if isinstance(state.get("foreign"), Mapping) and state["foreign"].get("published"):
        return _published_config(source, state["foreign"], export, license=license, cohort=cohort)
    cfg = dict(run or {})
    outputs = cfg.get("outputs")
    spec = dict(export["network"])
    kwargs = spec.get("kwargs", {})
    data = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    method = cfg.get("method", {}).get("name") if isinstance(cfg.get("method"), Mapping) else None
    if method is None and "segmenter" in cfg:
        method = f"asa-finetune (model arch {spec.get('arch')})"
    resample = data.get("resample_mm")
    low, high = run_percentiles(cfg)  # a pretraining run's, and a fine-tuning run's before the option: 0.5, 99.5
    intensity = (f"clip to percentiles {[low, high]} inside the brain, then z-score there; 0 outside"
                 if (low, high) != (0.0, 100.0) else
                 "z-score inside the brain, no clip (percentiles [0.0, 100.0]); 0 outside")
    return {
        **_head(export), "method": method,
        "data": {k: data[k] for k in DATA_KEYS if k in data} | ({"task": outputs.get("name")}
                                                                if isinstance(outputs, Mapping) else {})
        | ({"demo_phantoms": True} if "root" in data and data["root"] is None and data.get("store") is None else {}),
        "crop": list(crop_edges(kwargs["img_size"])) if "img_size" in kwargs else None,
        "patch_size": kwargs.get("patch_size"),
        "spacing_mm": [float(resample)] * 3 if resample else None,  # None: the data's own grid (no resampling)
        "orientation": "RAS+",
        "preprocessing": {"reorient": "RAS+ (nibabel as_closest_canonical)",
                          "intensity": intensity,
                          "crop": "brain-centred, the mid-sagittal plane at the centre of the left-right axis",
                          "resample_mm": resample},
        "source": {"file": source.name, "step": int(export.get("step") or 0)},
        "metrics": dict(metrics or {}), **_tail(cohort, folder_licence(license, source)),
        "citations": [dict(ASA_CITATION)],
    }


def _published_config(source: Path, foreign: Mapping[str, Any], export: Mapping[str, Any], *, license: str | None,
                      cohort: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config.json`` of a published file (``foreign``: `asa.io.foreign`'s account of it): what its own plan
    states (trainer, dataset, spacing, normalisation, reader and transposes), not asa's preprocessing, which it
    never went through; ``published``: its adaptation plan, trainer, citations and licence as the file holds them,
    which the nnssl and nnU-Net files of the folder carry again unchanged."""
    published = dict(foreign["published"])
    pretrain = (published.get("adaptation_plan") or {}).get("pretrain_plan") or {}
    name, conf = next(iter((pretrain.get("configurations") or {}).items()), (None, {}))
    spacing = foreign.get("spacing_mm")
    reader = pretrain.get("image_reader_writer")
    return {
        **_head(export), "method": published.get("trainer_name") or foreign.get("architecture"),
        "data": {"name": pretrain["dataset_name"]} if pretrain.get("dataset_name") else {},
        "crop": list(crop_edges(export["network"]["kwargs"]["img_size"])), "patch_size": None,
        "spacing_mm": [float(z) for z in spacing] if spacing else None,
        "orientation": (f"as {reader} reads a file, then transpose_forward {pretrain.get('transpose_forward')} "
                        "(the published plan's)" if reader else "not recorded in the published file"),
        "preprocessing": {"plan": f"the published file's own ({foreign['layout']}), not asa's",
                          "configuration": name, "spacing_style": conf.get("spacing_style"),
                          "normalization_schemes": conf.get("normalization_schemes"),
                          "use_mask_for_norm": conf.get("use_mask_for_norm"), "image_reader_writer": reader,
                          "transpose_forward": pretrain.get("transpose_forward")},
        "source": {"file": source.name, "step": int(export.get("step") or 0), "layout": foreign["layout"]},
        "published": published, "metrics": {},
        **_tail(cohort, folder_licence(license, source, recorded=published.get("license"))),
    }


def _head(export: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``'s first fields: the folder's format and the networks of its weights."""
    spec = dict(export["network"])
    return {"asa_format": FOLDER_FORMAT, "format_version": 2, "weights": MODEL_FILE,
            "network": encoder_network_spec(spec), "source_network": spec,
            "encoder_prefix": next(iter(export["encoder"])).split(".", 1)[0] + "."}


def _tail(cohort: Mapping[str, Any] | None, licence: str) -> dict[str, Any]:
    """``config.json``'s last fields: the pretraining cohort's summary, the licence and the software."""
    return {**({"pretraining_cohort": dict(cohort)} if cohort else {}), "license": licence,
            "asa_version": asa.__version__, "git_commit": git_commit(), "software": _software()}


def _software() -> dict[str, str | None]:
    """The versions of the packages that wrote the folder and that read its weights again (``config.json``'s
    ``software``): Python, torch, MONAI, numpy and dynamic-network-architectures (nnU-Net's networks; None when
    not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


class Hub(Format):
    """The model folder: `asa.io.hub.write_model_folder` writes its three files; this part, the whole segmenter (and
    its card section) and the cohort's list beside them."""

    name, level, files = "hub", FOLDER, (MODEL_FILE, CONFIG_FILE, CARD_FILE, SEGMENTER_FILE, COHORT_LIST)
    about = "the model folder (the default)"

    def part(self, job: Job) -> Part:
        files: dict[str, Any] = {}
        if job.cohort is not None:
            files[COHORT_LIST] = lambda path: write_cohort_list(path.parent, job.cohort, path.name)
        if job.segmenter is None:
            return Part(files)
        files[SEGMENTER_FILE] = lambda path: save_checkpoint(path, job.segmenter)
        return Part(files, segmenter_card(job.source, job.segmenter["config"], base_model=job.config.get("base_model"),
                                          command=job.command))


HUB = register_format(Hub())
