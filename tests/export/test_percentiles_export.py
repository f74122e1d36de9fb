"""data.percentiles travels with the network: a run fine-tuned with [0, 100] trains and validates on the unclipped
z-score, its checkpoints record it, asa-predict preprocesses alike (read from the checkpoint; one saved before the
option clips to 0.5-99.5 as it always did), and the export cards say which scheme the network reads: nnU-Net's
ZScoreNormalization exactly for [0, 100], asa's clip that nnU-Net cannot state otherwise; asa-export says so on the
console too, with the measured agreement and the option that removes the gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import asa.api.tasks.segmentation as segmentation
import asa.eval.predict as prediction
from asa.api import finetune, predict
from asa.api.config import compose_config
from asa.api.export import export_model
from asa.cli.export import main as export_main
from asa.data import discover, write_demo_dataset
from asa.data.preprocessing import brain_mask, case_to_item, load_case_images
from asa.eval.predict import Predictor
from asa.formats.nnunet import CLIP_AGREEMENT
from asa.io import load_checkpoint, save_checkpoint
from tests.fixtures.volumes import zscore_by_hand

pytestmark = pytest.mark.slow  # the module's fine-tuned network (one step, then asa-predict and four exports)

EDGE = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResEnc fine-tuned for one step with data.percentiles=[0,100], the percentiles each dataset it built was
    given, and a copy of its checkpoint as one saved before the option (no data.percentiles)."""
    base = tmp_path_factory.mktemp("percentiles")
    root = write_demo_dataset("msd", base / "data", cases=4, size=EDGE, seed=5)
    built, real = [], segmentation.build_segmentation_dataset

    def spy(*args, **kwargs):
        built.append((kwargs["train"], kwargs.get("percentiles")))
        return real(*args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(segmentation, "build_segmentation_dataset", spy)
    try:
        finetune(compose_config("finetune", [
            "data=msd", f"data.root={root}", "model=resenc", "model.size=tiny", f"data.crop={EDGE}", "trainer=smoke",
            "trainer.max_steps=1", f"output_dir={base / 'run'}", "device=cpu", "data.num_workers=0", "trainer.amp=off",
            "data.percentiles=[0,100]"]))
    finally:
        patch.undo()
    last = base / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["config"]["data"]["percentiles"]
    save_checkpoint(base / "run" / "checkpoints" / "before.pt", state)
    return last, base / "run" / "checkpoints" / "before.pt", root, built, base


def test_training_validation_and_the_checkpoint_carry_it(trained):
    last, _, _, built, _ = trained
    assert sorted(built) == [(False, (0.0, 100.0)), (True, (0.0, 100.0))]
    assert load_checkpoint(last)["config"]["data"]["percentiles"] == [0.0, 100.0]


def test_asa_predict_reads_them_from_the_checkpoint(trained, monkeypatch):
    last, before, root, _, base = trained
    cases = discover("msd", root, require_labels=False)
    cpu = torch.device("cpu")
    ours = Predictor.from_checkpoint(last, device=cpu)
    image, _ = load_case_images(case_to_item(cases[0], ours.task.channels))
    mask = brain_mask(image)
    assert ours.percentiles == (0.0, 100.0)
    assert np.array_equal(ours.preprocess(cases[0])[0].numpy(), zscore_by_hand(image, mask, None))
    old = Predictor.from_checkpoint(before, device=cpu)  # a checkpoint saved before the option: the old clip
    assert old.percentiles == (0.5, 99.5)
    assert np.array_equal(old.preprocess(cases[0])[0].numpy(), zscore_by_hand(image, mask, (0.5, 99.5)))

    seen, real = [], prediction.preprocess_for_inference

    def spy(case, task, *, percentiles):
        seen.append(percentiles)
        return real(case, task, percentiles=percentiles)

    monkeypatch.setattr(prediction, "preprocess_for_inference", spy)
    predict(compose_config("predict", [f"checkpoint={last}", f"input={root}", f"output={base / 'predicted'}",
                                       "device=cpu", "amp=off"]))
    assert seen == [(0.0, 100.0)] * len(cases) and all((base / "predicted" / f"{c.id}.nii.gz").is_file() for c in cases)


def test_a_bad_recorded_value_is_refused_naming_the_checkpoint(trained, tmp_path):
    last = trained[0]
    state = load_checkpoint(last)
    state["config"]["data"]["percentiles"] = [99.5, 0.5]
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(ValueError, match=r"bad.pt: the checkpoint's data.percentiles=\[99.5, 0.5\]: expected two"):
        Predictor.from_checkpoint(tmp_path / "bad.pt", device=torch.device("cpu"))


def test_the_cards_state_the_runs_scheme(trained):
    last, before, _, _, base = trained
    exact = (export_model(last, base / "results", format="nnunet-results") / "README.md").read_text()
    line = next(x for x in exact.splitlines() if x.startswith("- intensity:"))
    assert "asa's own scheme for this network, which was trained with data.percentiles [0, 100]" in line
    assert "cannot state" not in line
    clipped = (export_model(before, base / "results-before", format="nnunet-results") / "README.md").read_text()
    line = next(x for x in clipped.splitlines() if x.startswith("- intensity:"))
    assert "asa also clips each image to its brain's 0.5-99.5 percentiles first" in line and "cannot state" in line

    hub = json.loads((export_model(last, base / "hub") / "config.json").read_text())
    assert hub["preprocessing"]["intensity"] == "z-score inside the brain, no clip (percentiles [0.0, 100.0]); 0 outside"
    hub = json.loads((export_model(before, base / "hub-before") / "config.json").read_text())
    assert hub["preprocessing"]["intensity"] == ("clip to percentiles [0.5, 99.5] inside the brain, then z-score there; "
                                                 "0 outside")


def test_asa_export_warns_on_the_console_of_the_clip_nnunet_does_not_apply(trained, capsys):
    """The results folder of a network trained with asa's clip: one warning line with the measured agreement between
    the two predictors and the option that removes the gap; none for a network trained with [0, 100]."""
    last, before, _, _, base = trained
    capsys.readouterr()
    assert export_main([str(before), str(base / "warned"), "--format", "nnunet-results"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith(f"[asa-export] warning: {before} was fine-tuned with "
                                                      "data.percentiles [0.5, 99.5]")
    assert "nnU-Net's predictor does not" in warned[0] and "0.825 mean, 0.060 worst over 16 scans" in warned[0]
    assert "Fine-tune with data.percentiles=[0,100]" in warned[0] and "0.951 mean" in warned[0]
    assert export_main([str(last), str(base / "quiet"), "--format", "nnunet-results"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert export_main([str(before), str(base / "model-folder")]) == 0  # asa-predict reads it with its own clip
    assert "warning" not in capsys.readouterr().err


def test_the_warned_agreement_is_the_committed_measurement():
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nnunet-agreement-2026-11-26"
    for name, file in (("clip", "agreement-clip.json"), ("no clip", "agreement-noclip.json")):
        measured = json.loads((folder / file).read_text())
        assert len(measured["cases"]) == 16
        assert CLIP_AGREEMENT[name] == (round(measured["mean"], 3), round(measured["worst"], 3))
