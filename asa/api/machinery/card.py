"""What a model folder says about itself: its ``config.json`` (what built the weights: the network, the data, the
preprocessing, the software, the run's metrics and provenance) and its model card ``README.md`` (Hugging Face front
matter, intended use, training, metrics, citations, how to load it, licence), for `asa.api.export.export_model` and
the folder layout of `asa.io.hub`."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asa
from asa.api.configuration.compat import current_config
from asa.api.machinery.cohort import overlap_statement, recorded_overlap
from asa.data.preprocessing import PERCENTILES
from asa.io.hub import (COHORT_LIST, FOLDER_FORMAT, MODEL_FILE, NNSSL_CHECKPOINT, NNSSL_PLAN, SEGMENTER_FILE,
                        encoder_network_spec)
from asa.models.declared import crop_edges

__all__ = ["ASA_CITATION", "CHECKPOINT_DIR", "COMMAND_FILE", "folder_licence", "front_matter", "git_commit", "model_card",
           "model_config", "provenance", "segmenter_card"]


# the run's data settings a model folder repeats; size / patch_size: the crop of runs before data.crop, as recorded
DATA_KEYS = ("name", "layout", "task", "channels", "crop", "size", "patch_size", "resample_mm", "lr_centre")


CHECKPOINT_DIR = "checkpoints"


SOFTWARE = ("torch", "monai", "numpy", "dynamic-network-architectures")  # their versions in config.json


_LOCAL_PATH = re.compile(r"(?<![\w.~/-])(?:~|[A-Za-z]:)?[/\\][^\s'\"`,;]*")  # an absolute path, up to a space or quote


CARRIED = {  # the card's words on what the folder carries of its cohort (asa-export --cohort)
    "full": f"`{COHORT_LIST}` lists each case's id, subject, image digests and fingerprints (`{MODEL_FILE}` and the nnssl "
            "and nnU-Net files carry its summary), against which asa-finetune and asa-probe check their held-out "
            "cases: keep it beside them",
    "digests": f"`{COHORT_LIST}` lists each case's image digests and fingerprints under opaque keys (no case or subject "
               f"id; `{MODEL_FILE}` and the nnssl and nnU-Net files carry its summary), against which asa-finetune "
               "and asa-probe check their held-out cases by content: keep it beside them",
    "none": "this folder carries no cohort list (exported with --cohort none): held-out cases are not checked "
            "against it; compare a cohort with this digest"}


# what asa's own files ask to be cited (config.json, nnssl's checkpoint_final.pth and the card), in the form nnssl's
# files give theirs (nnU-Net's PretrainedTrainer prints them); a published file keeps its own
ASA_CITATION = {
    "type": "method", "name": "ASA (Attentive Symmetric Autoencoder)",
    "apa_citations": ["Huang, J., Li, H., Li, G., & Wan, X. (2022). Attentive Symmetric Autoencoder for Brain MRI "
                      "Segmentation. In Medical Image Computing and Computer Assisted Intervention - MICCAI 2022, "
                      "LNCS 13435 (pp. 203-213). Springer. https://doi.org/10.1007/978-3-031-16443-9_20"],
    "bibtex_citations": ["@inproceedings{huang2022asa, title={Attentive Symmetric Autoencoder for Brain MRI "
                         "Segmentation}, author={Huang, Junjia and Li, Haofeng and Li, Guanbin and Wan, Xiang}, "
                         "booktitle={Medical Image Computing and Computer Assisted Intervention -- MICCAI 2022}, "
                         "series={LNCS}, volume={13435}, pages={203--213}, publisher={Springer}, year={2022}, "
                         "doi={10.1007/978-3-031-16443-9_20}}"]}


# license: other names the terms it stands for (Hugging Face's license_name / license_link): the card's Licence section
OTHER_LICENCE = {"asa": "training-data-terms", "published": "publisher-terms"}


CARD_LINK = "README.md"  # license_link of license: other: the card, whose Licence section states the terms


COMMAND_FILE = "command.txt"  # beside config.yaml in a run folder: the command line that started the run


def segmenter_card(source: Path, config: Mapping[str, Any], *, base_model: str | None = None) -> str:
    """The model card's section on the whole segmenter: task, training data, the encoder it started from (the
    hub id ``base_model`` when given, else the file's name), the command that made it."""
    outputs = current_config(config).get("outputs")
    task = outputs if isinstance(outputs, Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    run = source.parent.parent if source.parent.name == CHECKPOINT_DIR else None
    command = None
    if run is not None and (run / COMMAND_FILE).is_file():
        command = (run / COMMAND_FILE).read_text(encoding="utf-8").strip()
    labels = task.get("labels") or task.get("regions") or task.get("classes")
    return "\n".join([
        "", "## Segmenter", "",
        f"`{SEGMENTER_FILE}` is the whole fine-tuned network ({source.name}); predict with",
        "", "```", "asa-predict checkpoint=path/to/this/folder input=IMAGES output=PREDICTIONS", "```", "",
        f"- task: {task.get('name', 'unknown')}" + (f", outputs {labels}" if labels else ""),
        f"- training data: {data.get('name', 'unknown')}" + (f" at {_public(str(data['root']))}" if data.get("root")
                                                             else "")
        + (f", split {_public(str(data['split_file']))}" if data.get("split_file") else ""),
        _encoder_line(config, base_model),
        "- metrics on its test split: the asa-evaluate summaries under Metrics (none: not evaluated in the run "
        "folder)",
        f"- command: `{_public(command)}`" if command else "- command: not recorded with the run (runs before command.txt)",
        ""])


def provenance(config: Mapping[str, Any], segmenter: Mapping[str, Any]) -> dict[str, Any]:
    """What an exported segmenter carries of the card (``model.onnx``'s metadata, nnU-Net's ``dataset.json`` and
    checkpoint): the encoder it was fine-tuned from (``base_model`` when given), the pretraining cohort's summary
    digest, the licence, the task and training data, the source file and step, asa's version and commit.
    ``config``: the folder's ``config.json`` (:func:`model_config`); ``segmenter``: the run config."""
    outputs = segmenter.get("outputs") if isinstance(segmenter.get("outputs"), Mapping) else {}
    data = segmenter.get("data") if isinstance(segmenter.get("data"), Mapping) else {}
    return {"encoder": _encoder_line(segmenter, config.get("base_model")).removeprefix("- encoder: "),
            "base_model": config.get("base_model"),
            "pretraining_cohort": config.get("pretraining_cohort"), "license": config.get("license"),
            "task": outputs.get("name"), "training_data": data.get("name"), "source": config.get("source"),
            "asa_version": config.get("asa_version"), "git_commit": config.get("git_commit")}


def _encoder_line(config: Mapping[str, Any], base_model: str | None) -> str:
    """The segmenter card's line on the encoder it was fine-tuned from: its hub page when ``base_model`` names
    it, else the pretrained file's name (``model.pretrained``), or that it trained from scratch."""
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    pretrained = model.get("pretrained")
    if base_model:
        return (f"- encoder: fine-tuned from [{base_model}](https://huggingface.co/{base_model})"
                + (f" (`{_public(str(pretrained))}`)" if pretrained else ""))
    if pretrained:
        return (f"- encoder: fine-tuned from `{_public(str(pretrained))}` (publish that encoder and give its hub id "
                "with `asa-export --base-model` to link it)")
    return "- encoder: trained from scratch (no pretrained encoder)"


def _public(text: str) -> str:
    """``text`` with each absolute or home-relative local path (``/home/me/data/brats``, ``~/data``) cut to
    ``<local>/`` and its last name: a card is public, the folders of the machine that made it are not."""
    return _LOCAL_PATH.sub(lambda m: "<local>/" + Path(m.group(0).rstrip("/")).name, text)


def git_commit() -> str | None:
    """The commit of the asa source in use, when it is a git checkout."""
    with contextlib.suppress(Exception):
        repo = Path(asa.__file__).resolve().parent.parent
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        return (done.stdout.strip() or None) if done.returncode == 0 else None
    return None


def _run_metrics(source: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """What the run recorded about its quality: the checkpoint's last validation round, and the means
    of every asa-evaluate ``summary.json`` found in the run folder (``<run>/*/summary.json``)."""
    metrics: dict[str, Any] = {}
    history = state.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        metrics["validation"] = {k: v for k, v in history[-1].items() if isinstance(v, (int, float, str))}
    run = source.parent.parent if source.parent.name == CHECKPOINT_DIR else None
    recorded = recorded_overlap(run) if run is not None else None  # asa-finetune's check of its split
    if recorded is not None and (statement := overlap_statement(recorded)) is not None:
        metrics["pretraining_overlap"] = statement
    for summary in sorted(run.glob("*/summary.json")) if run is not None else ():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(summary.read_text())
            names = data.get("names") or []
            means = {n: {m: data[n][m]["mean"] for m in ("Dice", "HD95", "NSD") if m in data.get(n, {})}
                     for n in names}
            if means:
                metrics[str(summary.parent.name)] = {"task": data.get("task"), "n_cases": data.get("n_cases"),
                                                     "mean": means,
                                                     **({"pretraining_overlap": data["pretraining_overlap"]}
                                                        if data.get("pretraining_overlap") else {})}
    return metrics


def folder_licence(given: str | None, source: Path, *, recorded: str | None = None, kept: str | None = None) -> str:
    """The licence of the folder: ``given`` (``--license``) or, when None, the one the published file ``recorded``,
    an earlier folder ``kept``, else ``other``; a published file's recorded licence is not replaced (refused)."""
    recorded = None if recorded == "other" else recorded  # "other" names no licence
    if given is None:
        return recorded or kept or "other"
    if recorded and given != recorded:
        raise ValueError(f"--license {given}: {source} was published under {recorded!r}, which a re-export keeps; "
                         "leave --license out")
    return given


def model_config(source: Path, state: Mapping[str, Any], export: Mapping[str, Any], *, license: str | None,
                 cohort: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json``: the spec of the network ``model.safetensors`` holds (the encoder alone:
    `asa.io.hub.encoder_network_spec`; ``source_network``: the network it was trained in) and what built it (method, data, crop, spacing, orientation,
    preprocessing), the asa version and git commit, the source and the run's metrics when known; ``cohort``: the
    pretraining cohort's summary (:func:`_carry_cohort`), stated as ``pretraining_cohort``; ``license``: the
    ``--license`` given (None: :func:`folder_licence`). A published file (`asa.io.foreign`) states its own plan, trainer,
    dataset, citations and licence (:func:`_published_config`): they are kept, not replaced by asa's."""
    run = state.get("model_config") or {}  # re-exporting a model folder keeps what it recorded
    if run:
        if run.get("network") == export["network"]:  # a folder of format 1 recorded the source network
            run = {**run, "network": encoder_network_spec(export["network"]), "source_network": export["network"],
                   "format_version": 2}
        if cohort is None and isinstance(run.get("pretraining_cohort"), Mapping):  # a folder that carried none
            cohort = {**run["pretraining_cohort"], "carried": "none"}
        recorded = (run.get("published") or {}).get("license")
        if not run.get("published"):  # asa's own folder, exported before it carried its citation
            run = {"citations": [dict(ASA_CITATION)], **run}
        return {**run, **({"pretraining_cohort": dict(cohort)} if cohort else {}), "software": _software(),
                "license": folder_licence(license, source, recorded=recorded, kept=run.get("license")),
                "asa_version": asa.__version__, "git_commit": git_commit() or run.get("git_commit")}
    if isinstance(state.get("foreign"), Mapping) and state["foreign"].get("published"):
        return _published_config(source, state["foreign"], export, license=license, cohort=cohort)
    cfg = current_config(state["config"]) if isinstance(state.get("config"), Mapping) else {}
    outputs = cfg.get("outputs")
    spec = dict(export["network"])
    kwargs = spec.get("kwargs", {})
    data = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    method = cfg.get("method", {}).get("name") if isinstance(cfg.get("method"), Mapping) else None
    if method is None and "segmenter" in cfg:
        method = f"asa-finetune (model arch {spec.get('arch')})"
    resample = data.get("resample_mm")
    return {
        "asa_format": FOLDER_FORMAT, "format_version": 2, "weights": MODEL_FILE,
        "network": encoder_network_spec(spec), "source_network": spec, "encoder_prefix": next(iter(export["encoder"])).split(".", 1)[0] + ".",
        "method": method,
        "data": {k: data[k] for k in DATA_KEYS if k in data} | ({"task": outputs.get("name")}
                                                                if isinstance(outputs, Mapping) else {})
        | ({"demo_phantoms": True} if _demo(data) else {}),
        "crop": list(crop_edges(kwargs["img_size"])) if "img_size" in kwargs else None,
        "patch_size": kwargs.get("patch_size"),
        "spacing_mm": [float(resample)] * 3 if resample else None,  # None: the data's own grid (no resampling)
        "orientation": "RAS+",
        "preprocessing": {"reorient": "RAS+ (nibabel as_closest_canonical)",
                          "intensity": f"clip to percentiles {list(PERCENTILES)} inside the brain, then z-score "
                                       "there; 0 outside",
                          "crop": "brain-centred, the mid-sagittal plane at the centre of the left-right axis",
                          "resample_mm": resample},
        "source": {"file": source.name, "step": int(export.get("step") or 0)},
        "metrics": _run_metrics(source, state),
        **({"pretraining_cohort": dict(cohort)} if cohort else {}),
        "license": folder_licence(license, source), "asa_version": asa.__version__, "git_commit": git_commit(),
        "software": _software(), "citations": [dict(ASA_CITATION)],
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
    spec = dict(export["network"])
    spacing = foreign.get("spacing_mm")
    reader = pretrain.get("image_reader_writer")
    return {
        "asa_format": FOLDER_FORMAT, "format_version": 2, "weights": MODEL_FILE,
        "network": encoder_network_spec(spec), "source_network": spec,
        "encoder_prefix": next(iter(export["encoder"])).split(".", 1)[0] + ".",
        "method": published.get("trainer_name") or foreign.get("architecture"),
        "data": {"name": pretrain["dataset_name"]} if pretrain.get("dataset_name") else {},
        "crop": list(crop_edges(spec["kwargs"]["img_size"])), "patch_size": None,
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
        **({"pretraining_cohort": dict(cohort)} if cohort else {}),
        "license": folder_licence(license, source, recorded=published.get("license")), "asa_version": asa.__version__,
        "git_commit": git_commit(), "software": _software(),
    }


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


def _demo(data: Mapping[str, Any]) -> bool:
    """Whether the run read asa's generated demo phantoms (``data.root`` and ``data.store`` null)."""
    return "root" in data and data.get("root") is None and data.get("store") is None


def model_card(config: Mapping[str, Any], *, segmenter: Mapping[str, Any] | None = None) -> str:
    """``README.md``: Hugging Face front matter (licence, library, pipeline tag, ``base_model`` and ``datasets``
    when given, tags, and for a segmenter evaluated in its run folder a ``model-index`` of its mean Dice), then
    what it is (an encoder, or a segmenter of its task), intended use, training data, metrics when known, the
    citations (a published file's own, else asa's paper) and how to load it (also strictly with safetensors alone)."""
    spec = config.get("source_network") or config["network"]  # the arch the encoder was trained in
    crop = config.get("crop")
    data = config.get("data") or {}
    metrics = config.get("metrics") or {}
    published = config.get("published")
    outputs = current_config(segmenter).get("outputs") if segmenter is not None else None
    task = outputs.get("name", "unknown task") if isinstance(outputs, Mapping) else "unknown task"
    lines = ["---", *front_matter(config, segmenter), "---", "",
             *([f"# asa encoder ({spec['arch']})", "", "## Intended use", "",
                "A pretrained encoder for 3D brain MRI, to initialise segmentation and other downstream networks "
                "(fine-tuning) or to extract features."] if segmenter is None else
               [f"# {task} segmenter ({spec['arch']}, fine-tuned with asa)", "", "## Intended use", "",
                f"A 3D brain-MRI segmenter ({task}): `{SEGMENTER_FILE}` is the whole fine-tuned network, which "
                f"`asa-predict` runs (Segmenter, below); `{MODEL_FILE}` is its encoder alone, to initialise other "
                "networks."]),
             "Research use only: it is not a medical device and was not validated for clinical decisions.", "",
             "## Training", "",
             f"- method: {config.get('method') or 'unknown'}" + (" (the published file's trainer)" if published else ""),
             f"- data: {'demo phantoms (generated by asa, not scans)' if data.get('demo_phantoms') else data.get('name', 'unknown')}"
             + (f" (layout {data['layout']})" if data.get("layout") else "")
             + (f", channels {', '.join(map(str, data['channels']))}" if data.get("channels") else ""),
             f"- crop: {' x '.join(map(str, crop)) if crop else 'unknown'} voxels"
             + (f", patch size {config['patch_size']}" if config.get("patch_size") else ""),
             f"- spacing: {config['spacing_mm']} mm" if config.get("spacing_mm") else "- spacing: the data's own "
             "(no resampling)",
             f"- orientation: {config.get('orientation', 'RAS+')}; preprocessing: see config.json",
             f"- intensity: {_intensity(config)}",
             f"- asa {config.get('asa_version')}" + (f", commit {config['git_commit']}" if config.get("git_commit") else "")
             + (", exported with " + ", ".join(f"{k} {v}" for k, v in config["software"].items() if v)
                if config.get("software") else ""),
             _source_line(config),
             *([f"- pretraining cohort: {cohort['cases']} cases, {cohort['images']} images, digest "
                f"`{cohort['digest']}`; " + CARRIED.get(cohort.get("carried", "full"), CARRIED["full"])]
               if (cohort := config.get("pretraining_cohort")) else []), "",
             "## Metrics", ""]
    overlap = metrics.get("pretraining_overlap")
    if overlap and overlap.get("accepted"):  # metrics over cases the encoder saw in pretraining: said, not only kept
        lines += [f"**Not held out:** {overlap['text']}: those test metrics include cases the encoder was pretrained "
                  "on.", ""]
    if metrics:
        lines += ["```json", json.dumps(metrics, indent=2), "```", ""]
    else:
        lines += ["None recorded with the run.", ""]
    citations = (published or {}).get("citations") if published else config.get("citations")
    if citations:
        lines += ["## Citations", "", ("The published file asks that these be cited (as nnU-Net's PretrainedTrainer "
                  "prints them):" if published else "Please cite:"), ""]
        lines += [f"- {c.get('type', '?')} `{c.get('name', '?')}`: "
                  + " ".join(c.get("apa_citations") or c.get("bibtex_citations") or []) if isinstance(c, Mapping)
                  else f"- {c}" for c in citations] + [""]
    lines += ["## How to use", "", "```python", "import asa", "",
              "encoder = asa.load_encoder(\"path/to/this/folder\")  # weights loaded, eval mode", "```", "",
              f"Or with torch and safetensors alone, strictly: `{MODEL_FILE}` holds a tensor that two names share "
              "once, and safetensors' `load_model` leaves out the second names, which the network shares as well:", "",
              "```python", "import json", "from safetensors.torch import load_model",
              "from asa.models import build_network", "", "encoder = build_network(json.load(open(\"config.json\"))[\"network\"])",
              f"load_model(encoder, \"{MODEL_FILE}\", strict=True)", "```", "",
              "Fine-tune it with `asa-finetune model.pretrained=path/to/this/folder`.", "",
              "## Licence", "",
              f"`{config['license']}`" + (("." if config["license"] != "other" else
                                          ": the published file records no licence; the terms its publisher released it "
                                          "under apply, state them here." if published else
                                          ": the terms of the training data apply; state them here.")), ""]
    return "\n".join(lines)


def front_matter(config: Mapping[str, Any], segmenter: Mapping[str, Any] | None = None) -> list[str]:
    """The card's YAML front matter, one line each (Hugging Face's model-card metadata): ``pipeline_tag``
    ``image-segmentation`` for a whole segmenter, ``image-feature-extraction`` for an encoder; ``base_model`` and
    ``datasets`` as given to the export (hub ids); ``license: other`` with ``license_name`` and ``license_link`` (the
    card, whose Licence section states the terms); ``model-index`` (in YAML's JSON form) with each asa-evaluate
    summary of the run folder as a result: the mean Dice over the task's outputs on that many cases, its name saying
    "not held out" when test cases of the pretraining cohort were accepted."""
    spec = config.get("source_network") or config["network"]
    lines = [f"license: {config['license']}",
             *([f"license_name: {OTHER_LICENCE['published' if config.get('published') else 'asa']}",
                f"license_link: {CARD_LINK}"] if config["license"] == "other" else []),
             "library_name: asa",
             f"pipeline_tag: {'image-segmentation' if segmenter is not None else 'image-feature-extraction'}"]
    if config.get("base_model"):
        lines.append(f"base_model: {config['base_model']}")
    if config.get("datasets"):
        lines += ["datasets:", *(f"- {d}" for d in config["datasets"])]
    lines += ["tags:", "- medical-imaging", "- 3d", "- brain-mri", "- self-supervised", f"- {spec['arch']}"]
    results = []
    for split, summary in sorted((config.get("metrics") or {}).items()):
        means = summary.get("mean") if isinstance(summary, Mapping) else None
        dice = [m["Dice"] for m in (means or {}).values() if isinstance(m, Mapping) and "Dice" in m]
        if segmenter is None or not dice:
            continue
        name = (config.get("data") or {}).get("name") or "unknown"
        overlap = summary.get("pretraining_overlap") or {}
        flag = f" (not held out: {overlap['text']})" if overlap.get("accepted") else ""
        results.append({"task": {"type": "image-segmentation"}, "dataset": {"name": name, "type": name, "split": split},
                        "metrics": [{"type": "dice", "name": f"mean Dice over {len(dice)} outputs, {summary.get('n_cases')} "
                                     f"cases{flag}", "value": round(float(sum(dice) / len(dice)), 4)}]})
    if results:
        lines.append("model-index: " + json.dumps([{"name": f"asa {spec['arch']}", "results": results}]))
    return lines


def _intensity(config: Mapping[str, Any]) -> str:
    """The card's words on the intensity normalisation the encoder was pretrained with."""
    pre = config.get("preprocessing") or {}
    if config.get("published"):
        schemes, masks = pre.get("normalization_schemes"), pre.get("use_mask_for_norm")
        return (f"{', '.join(map(str, schemes))} (use_mask_for_norm {masks}), as the published plan states"
                if schemes else "not recorded in the published file")
    return pre.get("intensity") or "see config.json"


def _source_line(config: Mapping[str, Any]) -> str:
    """The card's line naming the file the weights came from; a published one's plan is carried unchanged."""
    src = config.get("source") or {}
    line = f"- source: {src.get('file')} (step {src.get('step')})"
    published = config.get("published")
    if not published:
        return line
    plan = (published.get("adaptation_plan") or {}).get("pretrain_plan") or {}
    return (f"- source: a published {published.get('layout')} checkpoint, {src.get('file')} (step {src.get('step')}, "
            f"trainer {published.get('trainer_name') or 'not recorded'}, dataset "
            f"{plan.get('dataset_name') or 'not recorded'}), re-exported by asa: its plan (spacing, normalisation, "
            "reader, transposes, dataset), trainer, citations and licence are carried unchanged into "
            f"`{NNSSL_CHECKPOINT}`, `{NNSSL_PLAN}` and `config.json` (`published`)")
