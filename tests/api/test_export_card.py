"""What a model folder says of itself and how plain torch reads it: ``model.safetensors`` loads strictly with
safetensors' ``load_model`` (the card's snippet) although nnU-Net's blocks name each convolution twice and the file
holds it once; the card of a segmenter names its task, not "asa encoder"; ``license: other`` comes with
``license_name`` and ``license_link``; asa's own files carry the ASA paper as ``citations``; ``model-index`` says
when its test metrics include cases of the pretraining cohort (accepted)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model

from asa.api.export import export_model
from asa.formats.card import ASA_CITATION, front_matter, model_card
from asa.io import save_checkpoint
from asa.models import ASA, PRESETS, build_network, network_spec
from asa.models.cnn.resenc import resenc_unet


def _folder(tmp_path, net, **kwargs):
    save_checkpoint(tmp_path / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 1})
    return export_model(tmp_path / "last.pt", tmp_path / "model", **kwargs)


def _card_snippet(folder, monkeypatch):
    """The card's strict-load snippet, run in ``folder`` as a user runs it: the encoder it builds and fills."""
    card = (folder / "README.md").read_text()
    code = card.split("```python")[2].split("```")[0]
    assert "load_model(encoder, \"model.safetensors\", strict=True)" in code and "load_encoder" not in code
    scope: dict = {}
    with monkeypatch.context() as m:
        m.chdir(folder)
        exec(compile(code, "card", "exec"), scope)  # noqa: S102 - the card's own snippet
    return scope["encoder"]


def test_model_safetensors_loads_strictly_with_the_cards_snippet(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    folder = _folder(tmp_path, net)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        aliases = json.loads(fh.metadata()["aliases"])
    assert aliases  # nnU-Net's blocks: each convolution under two names, stored once
    encoder = _card_snippet(folder, monkeypatch)
    source = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    loaded = encoder.state_dict()
    assert set(loaded) == set(source) and all(torch.equal(loaded[k], source[k]) for k in source)
    # plain load_state_dict(strict=True) needs the second names back from the metadata, as docs/weights-elsewhere.md says
    fresh = build_network(json.loads((folder / "config.json").read_text())["network"])
    tensors = load_file(folder / "model.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict(tensors, strict=True)
    fresh.load_state_dict({**tensors, **{a: tensors[b] for a, b in aliases.items()}}, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], source[k]) for k in source)


def test_an_asa_encoder_without_aliases_loads_with_plain_load_state_dict(tmp_path, monkeypatch):
    torch.manual_seed(0)
    folder = _folder(tmp_path, ASA(img_size=32, **PRESETS["tiny"]))
    encoder = build_network(json.loads((folder / "config.json").read_text())["network"])
    assert encoder.load_state_dict(load_file(folder / "model.safetensors"), strict=True) is not None
    assert torch.equal(_card_snippet(folder, monkeypatch).state_dict()[next(iter(encoder.state_dict()))],
                       encoder.state_dict()[next(iter(encoder.state_dict()))])


def test_licence_fields_and_citations_of_asas_own_files(tmp_path):
    torch.manual_seed(0)
    folder = _folder(tmp_path, resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny"))
    head = (folder / "README.md").read_text().split("---")[1].splitlines()
    assert "license: other" in head and "license_name: training-data-terms" in head and "license_link: README.md" in head
    config = json.loads((folder / "config.json").read_text())
    assert config["citations"] == [ASA_CITATION] and "MICCAI 2022" in ASA_CITATION["apa_citations"][0]
    assert torch.load(folder / "checkpoint_final.pth", weights_only=True)["citations"] == [ASA_CITATION]
    card = (folder / "README.md").read_text()
    assert "## Citations" in card and "Attentive Symmetric Autoencoder for Brain MRI Segmentation" in card
    # a named licence needs neither field; a re-export keeps the citation
    again = export_model(folder, tmp_path / "again", license="apache-2.0")
    head = (again / "README.md").read_text().split("---")[1].splitlines()
    assert "license: apache-2.0" in head and not [ln for ln in head if ln.startswith("license_")]
    assert json.loads((again / "config.json").read_text())["citations"] == [ASA_CITATION]


CONFIG = {"license": "other", "network": {"arch": "encoder", "kwargs": {}},
          "source_network": {"arch": "resenc", "kwargs": {}}, "data": {"name": "brats"}, "citations": [ASA_CITATION],
          "metrics": {"eval_test": {"task": "brats", "n_cases": 3, "mean": {"WT": {"Dice": 0.8}, "TC": {"Dice": 0.6}},
                                    "pretraining_overlap": {"accepted": True, "test": {"cases": 2, "of": 3},
                                                            "text": "2 of 3 test cases were in the pretraining cohort, "
                                                                    "accepted (data.accept_pretraining_overlap=true)"}},
                      "eval_val": {"task": "brats", "n_cases": 2, "mean": {"WT": {"Dice": 0.9}}}}}
SEGMENTER = {"outputs": {"name": "brats", "regions": {"WT": [1, 2, 4]}}, "data": {"name": "brats"}}


def test_a_segmenters_card_names_its_task_and_flags_an_accepted_overlap_in_model_index():
    card = model_card(CONFIG, segmenter=SEGMENTER)
    assert "# brats segmenter (resenc, fine-tuned with asa)" in card and "# asa encoder" not in card
    assert "`segmenter.pt` is the whole fine-tuned network" in card
    assert "# asa encoder (resenc)" in model_card(CONFIG)  # an encoder's card stays one
    index = json.loads(next(ln for ln in front_matter(CONFIG, SEGMENTER) if ln.startswith("model-index: "))
                       .removeprefix("model-index: "))
    names = {r["dataset"]["split"]: r["metrics"][0]["name"] for r in index[0]["results"]}
    assert names["eval_test"] == ("mean Dice over 2 outputs, 3 cases (not held out: 2 of 3 test cases were in the "
                                  "pretraining cohort, accepted (data.accept_pretraining_overlap=true))")
    assert names["eval_val"] == "mean Dice over 1 outputs, 2 cases"
    assert index[0]["results"][0]["metrics"][0]["value"] == 0.7
