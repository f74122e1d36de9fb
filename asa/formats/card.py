"""The model card, one skeleton (`model_card`: front matter, intended use, training, metrics, citations, how to load
it, licence) to which each format adds its section (`asa.formats.base.Part.card`), and the provenance every exported file
carries (`provenance`)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asa
from asa.io.hub import COHORT_LIST, MODEL_FILE, NNSSL_CHECKPOINT, NNSSL_PLAN, SEGMENTER_FILE

__all__ = ["ASA_CITATION", "folder_licence", "front_matter", "git_commit", "model_card",
           "provenance", "provenance_card", "segmenter_card"]


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


def segmenter_card(source: Path, config: Mapping[str, Any], *, base_model: str | None = None,
                   command: str | None = None) -> str:
    """The model card's section on the whole segmenter (``config``: its run config as this asa reads it): task,
    training data, the encoder it started from (the hub id ``base_model`` when given, else the file's name), the
    ``command`` that made it (its run's ``command.txt``)."""
    outputs = config.get("outputs")
    task = outputs if isinstance(outputs, Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
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


def model_card(config: Mapping[str, Any], *, segmenter: Mapping[str, Any] | None = None) -> str:
    """``README.md``'s skeleton: front matter (:func:`front_matter`), what it is (an encoder, or a segmenter of its
    task: ``segmenter``, its run config), intended use, training, metrics, citations, how to load it, licence; the
    formats add their sections after it (`asa.formats.base.Part.card`)."""
    spec = config.get("source_network") or config["network"]  # the arch the encoder was trained in
    crop = config.get("crop")
    data = config.get("data") or {}
    metrics = config.get("metrics") or {}
    published = config.get("published")
    outputs = segmenter.get("outputs") if segmenter is not None else None
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
    """The card's YAML front matter (Hugging Face's model-card metadata), one line each: the licence (``other``: with
    ``license_name`` and ``license_link``, the card's Licence section), ``pipeline_tag`` (a segmenter's or an
    encoder's), ``base_model`` and ``datasets`` when given, tags, and a segmenter's ``model-index``: each asa-evaluate
    summary's mean Dice, named "not held out" when test cases of the pretraining cohort were accepted."""
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


def provenance_card(prov: Mapping[str, Any], *, library: str, tags: tuple[str, ...], title: str,
                    cohort: bool = False) -> list[str]:
    """The head of the card of a folder that holds no model folder (an ONNX file alone, nnU-Net's results folder):
    front matter (licence, ``library``, ``tags`` after asa's), ``title`` and the lines of the provenance ``prov`` (:func:`provenance`;
    ``cohort``: with its pretraining cohort's line)."""
    source = prov.get("source") or {}
    pretraining = prov.get("pretraining_cohort") or {}
    return [
        "---", f"license: {prov.get('license')}", f"library_name: {library}", "pipeline_tag: image-segmentation",
        "tags:", *(f"- {tag}" for tag in ("medical-imaging", "3d", "brain-mri", *tags)), "---", "", f"# {title}", "",
        "A fine-tuned 3D brain-MRI segmenter. Research use only: it is not a medical device and was not validated "
        "for clinical decisions.", "",
        f"- task: {prov.get('task')}; training data: {prov.get('training_data')}",
        f"- encoder: {prov.get('encoder')}",
        *([f"- pretraining cohort: {pretraining.get('cases')} cases, {pretraining.get('images')} images, digest "
           f"`{pretraining.get('digest')}`" if pretraining else "- pretraining cohort: none recorded"] if cohort else []),
        f"- source: {source.get('file')} (step {source.get('step')}); asa {prov.get('asa_version')}"
        + (f", commit {prov['git_commit']}" if prov.get("git_commit") else ""),
        f"- licence: `{prov.get('license')}`"]
