"""docs/weights-elsewhere.md's account of nnU-Net's nnssl route against the committed records of
benchmarks/nnunet_nnssl_route.py: the install, the axis steps and their table, the rerun, and the predictor's
workaround (benchmarks/results/nnunet-nnssl-route-2026-11-27/route.json); the page's commands as run on a CPU torch,
with 4 and 1 channels, the plans' names, ``-pc``, ``-device cpu`` and what failed without them
(benchmarks/results/nnunet-nnssl-route-cpu-2026-11-28/documented.json). Needs no nnU-Net."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asa.formats.nnssl import route_plans_name
from asa.formats.nnunet import READER, TRANSPOSE
from benchmarks.nnunet_nnssl_route import DOCS, PAGE, PLANNING, ROUTE_PLANS, SMOKE, VARIANTS, page

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks" / "results" / "nnunet-nnssl-route-2026-11-27" / "route.json"
DOCUMENTED = ROOT / "benchmarks" / "results" / "nnunet-nnssl-route-cpu-2026-11-28" / "documented.json"
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
    """The section with its line breaks as spaces: a claim may wrap, a command may continue on the next line."""
    return _flat(section)


@pytest.fixture(scope="module")
def documented() -> dict:
    return json.loads(DOCUMENTED.read_text())


def _flat(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


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
    assert f"still calls itself {record['nnunetv2']}" in flat and "asa-nnunet nnUNetv2_train_pretrained -h" in flat
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


def test_the_page_gives_the_commands_that_were_run(documented, flat):
    """Each command of the documented run, with the page's dataset, plans and trainer, is on the page as it ran."""
    assert documented["docs_fields"] == DOCS
    for step in PAGE:
        assert _flat(page(step)) in flat, step
    assert f"-tr {SMOKE}" in flat


def test_the_docs_name_the_plans_the_route_writes(documented, section):
    """One Z per channel: the names nnU-Net wrote for 4 and 1 channels are `route_plans_name`'s, and so is every
    name the page gives for its 4-channel Dataset137 (in -p and in the fold's path)."""
    for name, outcome in documented["sets"].items():
        expected = route_plans_name("asa_resencL", (1, 1, 1), outcome["channels"])
        assert outcome["plans_name_expected"] == expected, name
        assert outcome["plans_written"] == [expected], name
        assert outcome["plans_line_printed"].startswith(f"[asa-nnunet] plans written: {expected} "), name
    assert {o["channels"] for o in documented["sets"].values()} == {1, 4}
    named = re.findall(r"ptPlans__asa_resencL____Spacing__[\d._]+___Norm__(?:Z_)*Z", section)
    assert len(named) >= 3 and set(named) == {route_plans_name("asa_resencL", (1, 1, 1), 4)}, set(named)
    assert "`…___Norm__Z`" in section  # the one-channel name


def test_the_documented_commands_train_and_predict_on_the_cpu_torch(documented, flat):
    assert documented["torch"].endswith("+cpu") and documented["torchvision"] == "0.28.0"
    assert documented["import_torchvision_alone"] == "RuntimeError: operator torchvision::nms does not exist"
    assert documented["export"]["returncode"] == 0
    for name, outcome in documented["sets"].items():
        assert {k: v["returncode"] for k, v in outcome["steps"].items()} == dict.fromkeys(outcome["steps"], 0), name
        assert {"plan", "transpose", "route", "train", "copy", "predict"} <= set(outcome["steps"])
        assert outcome["training_log_epochs"] == 1, name  # the smoke trainer's one epoch
        cases = outcome["predictions"]
        assert len(cases) == documented["test"] and all(c["written"] and c["shape_and_affine_of_input"]
                                                        for c in cases), name
    assert f"torch {documented['torch']}, torchvision {documented['torchvision']}" in flat
    assert f"pip install torch=={documented['torch'].split('+')[0]} torchvision=={documented['torchvision']}" in flat
    assert f"nnU-Net at commit {documented['nnunet_commit'][:7]}" in flat
    assert f"{documented['train']} training and {documented['test']} held-out BraTS phantoms" in flat
    assert f"({round(documented['seconds'])} s on 2 cores shared with other jobs)" in flat


def test_each_fix_stands_against_what_failed_without_it(documented, flat):
    """nnU-Net's own commands stop at torchvision's import; a relative -pc given to nnU-Net's own command stops
    training started elsewhere, asa-nnunet's is absolute; without -device cpu, or with nnUNet_n_proc_DA=0, the
    commands stop: each with the line the page quotes."""
    outcome = documented["sets"][DOCS["dataset"]]
    before = outcome["before_the_fixes"]
    assert set(before) == {"plan_with_n_proc_DA_0", "route_without_asa_nnunet", "train_with_that_plans",
                           "train_without_asa_nnunet", "train_without_device_cpu", "predict_without_asa_nnunet",
                           "predict_without_device_cpu"}
    for key in ("train_without_asa_nnunet", "predict_without_asa_nnunet"):
        assert before[key]["last_error_line"] == documented["import_torchvision_alone"], key
    assert before["route_without_asa_nnunet"]["returncode"] == 0
    relative = before["route_without_asa_nnunet"]["checkpoint_path_stored"]
    assert relative == "models/resenc-L/checkpoint_final.pth"
    stored = outcome["steps"]["route"]["checkpoint_path_stored"]
    assert stored.startswith("/") and stored.endswith("/" + relative)
    for key in ("train_with_that_plans", "train_without_device_cpu", "predict_without_device_cpu",
                "plan_with_n_proc_DA_0"):
        assert before[key]["returncode"] != 0 and before[key]["last_error_line"], key
        assert f"`{before[key]['last_error_line']}`" in flat, key
    assert before["train_with_that_plans"]["last_error_line"].endswith(f"{relative} does not exist!")

