"""docs/weights-elsewhere.md's account of nnU-Net's nnssl route against the committed record of
benchmarks/nnunet_nnssl_route.py (benchmarks/results/nnunet-nnssl-route-2026-11-27/route.json): the install, the
axis steps and their table, the rerun, and the predictor's workaround. Needs no nnU-Net."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asa.formats.nnunet import READER, TRANSPOSE
from benchmarks.nnunet_nnssl_route import PLANNING, ROUTE_PLANS, VARIANTS

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks" / "results" / "nnunet-nnssl-route-2026-11-27" / "route.json"
TABLE_ROWS = {"as nnU-Net documents the route": "nnunet_default", "step 1 only": "reader",
              "steps 1 and 2": "reader_and_transpose"}


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def section() -> str:
    text = (ROOT / "docs" / "weights-elsewhere.md").read_text()
    return text.split("#### nnssl's format and nnU-Net's nnssl route", 1)[1].split("\n#### ", 1)[0]


@pytest.fixture(scope="module")
def flat(section) -> str:
    """The section with its line breaks as spaces: a claim may wrap."""
    return " ".join(section.split())


def _landing(cases: list[dict]) -> str:
    """Where asa's left-right axis landed, in the table's words."""
    axes, n = [c["left_right_axis"] for c in cases], len(cases)
    flipped = sum(not c["left_to_right"] for c in cases)
    if len(set(axes)) == 1 and not flipped:
        return f"axis {axes[0]}, left to right, in {n} of {n}"
    return f"axes {', '.join(map(str, axes))}; {flipped} of {n} run right to left"


def test_the_steps_give_the_encoder_asas_array_and_nothing_less_does(record):
    variants = record["variants"]
    assert set(variants) == set(VARIANTS)
    assert all(c["matches"] == 1 for v in variants.values() for c in v["cases"])  # one mapping explains each case
    assert len({c["stored"] for c in variants["nnunet_default"]["cases"]}) == len(variants["nnunet_default"]["cases"])
    fixed = variants["reader_and_transpose"]
    assert fixed["all_as_asa"] and fixed["image_reader_writer"] == READER and fixed["transpose_forward"] == TRANSPOSE
    assert all(c["image_correlation"] >= 0.99999 for v in variants.values() for c in v["cases"])
    assert not variants["nnunet_default"]["all_as_asa"] and not variants["reader"]["all_as_asa"]
    # the export states what the steps set; the route reads neither
    assert record["export_plan"] == {"image_reader_writer": READER, "transpose_forward": TRANSPOSE}
    assert variants["nnunet_default"]["image_reader_writer"] != READER


def test_the_docs_table_is_the_record(record, section):
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in TABLE_ROWS:
            rows[TABLE_ROWS[cells[0]]] = cells[1:]
    assert set(rows) == set(TABLE_ROWS.values())
    for name, (landing, equal) in rows.items():
        cases = record["variants"][name]["cases"]
        assert landing == _landing(cases), name
        assert equal == f"{sum(c['as_asa'] for c in cases)} of {len(cases)}", name


def test_the_docs_steps_are_the_ones_measured(record, flat):
    assert f'"overwrite_image_reader_writer": "{READER}"' in flat
    assert f"d['transpose_forward'] = d['transpose_backward'] = {TRANSPOSE}" in flat
    assert f"nnUNetv2_plan_and_preprocess -d 137 {' '.join(PLANNING)}" in flat
    named = ", ".join(f"`{p}.json`" for p in ROUTE_PLANS[:-1]) + f" and `{ROUTE_PLANS[-1]}.json`"
    assert named in flat  # the plans files the route copies, in its order
    assert "-am like_pretrained" in flat and record["variants"]["reader_and_transpose"]["spacing"] == [
        record["spacing_mm"]] * 3  # like_pretrained took the export's spacing


def test_the_docs_state_the_rerun(record, flat):
    rerun = record["transpose_set_after_preprocessing"]
    kept, redone = rerun["rerun"], rerun["rerun_overwrite_pp"]
    assert kept["preprocessing_skipped"] and not kept["all_as_asa"] and kept["transpose_forward"] == TRANSPOSE
    assert redone["all_as_asa"] and not redone["preprocessing_skipped"]
    n = len(kept["cases"])
    assert f"{_landing(kept['cases']).split(',')[0]} in {n} of {n} cases, measured" in flat
    assert f"`--overwrite_pp`: {_landing(redone['cases']).split(',')[0]} in {n} of {n}" in flat


def test_the_docs_install_the_commit_measured(record, flat):
    commit = record["nnunet_commit"]
    assert f'"nnunetv2 @ git+https://github.com/MIC-DKFZ/nnUNet.git@{commit}"' in flat
    assert f"commit {commit[:7]}" in flat
    assert f"still calls itself {record['nnunetv2']}" in flat and "nnUNetv2_preprocess_like_nnssl -h" in flat
    assert f"with {record['torch'].split('+')[0]}" in flat  # what pip did without the torchvision first


def test_the_predictor_workaround_is_the_one_measured(record, flat):
    training = record["training"]
    assert training["differing_from_export"] == 0 and training["encoder_and_stem_tensors"] > 0
    assert f"{training['encoder_and_stem_tensors']} encoder and stem tensors, 0 differing" in flat
    assert f"{training['epochs']} epoch of {training['steps_per_epoch']} steps" in flat
    failed = training["predict_as_trained"]
    assert failed["returncode"] != 0 and failed["error"] in flat
    workaround = training["predict_workaround"]
    assert f"-chk {workaround['chk']}" in flat and f"c['trainer_name'] = '{workaround['trainer_name']}'" in flat
    cases = workaround["cases"]
    assert all(c["shape_and_affine_of_input"] and c["voxels_differing_from_trained_network"] == 0 for c in cases)
    assert f"On {len(cases)} held-out cases" in flat and "in 0 voxels" in flat
    assert f"{record['train']} training and {record['test']} held-out cases" in flat


def test_the_card_gives_the_route_the_files_reader_and_transposes(tmp_path):
    """The route reads neither from the file, so the card's nnssl paragraph says them, as the file's plan states
    them: asa's own, and a published plan's other ones."""
    import torch

    from asa.api.export import export_model
    from asa.formats.nnssl import route_note
    from asa.io import save_checkpoint
    from asa.io.hub import NNSSL_CHECKPOINT
    from asa.models import network_spec
    from asa.models.cnn.resenc import resenc_unet

    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    save_checkpoint(tmp_path / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 1})
    out = export_model(tmp_path / "last.pt", tmp_path / "model")
    card = " ".join((out / "README.md").read_text().split())
    plan = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)["nnssl_adaptation_plan"]["pretrain_plan"]
    assert route_note(plan).strip() in card
    assert f'`"overwrite_image_reader_writer": "{READER}"` in its `dataset.json` before planning' in card
    assert f"`transpose_backward` `{TRANSPOSE}` in its plans before the route" in card
    other = route_note({"image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2]})
    assert '"SimpleITKIO"' in other and "`[0, 1, 2]`" in other and route_note({}) == ""
