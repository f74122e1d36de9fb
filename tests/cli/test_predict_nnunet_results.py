"""asa-predict given the nnU-Net v2 results folder that asa-export wrote (``--format nnunet-results``), or its fold's
checkpoint_final.pth, says what it is and how nnU-Net's predictor runs it (the folder's dataset id, configuration and
fold), and which file of asa's asa-predict reads; it was answered "no segmenter.pt: it carries a pretrained encoder
only". Refused (exit 2) before anything is written."""

from __future__ import annotations

import re

import pytest

from asa.api import finetune, predict
from asa.api.config import compose_config
from asa.api.machinery.run import OptionError
from asa.cli.common import EXIT_REFUSED, entry
from asa.cli.export import main as export_main
from asa.data import write_demo_dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("nnunet-results")
    root = write_demo_dataset("ibsr", base / "ibsr", cases=4, size=24, seed=5)
    run = base / "run"
    finetune(compose_config("finetune", [
        "data=ibsr", f"data.root={root}", "model=resenc", "model.size=tiny", "data.crop=24", "trainer=smoke",
        "trainer.max_steps=1", "trainer.epochs=1", "trainer.panel_every=0", f"output_dir={run}", "device=cpu",
        "data.num_workers=0", "trainer.amp=off"]))
    folder = base / "results"
    assert export_main([str(run / "checkpoints" / "last.pt"), str(folder), "--format", "nnunet-results",
                        "--dataset-id", "501"]) == 0
    return root, folder


@pytest.mark.parametrize("given", ["folder", "fold checkpoint"])
def test_a_results_folder_is_named_with_the_commands_that_run_it(exported, tmp_path, capsys, given):
    root, folder = exported
    checkpoint = folder if given == "folder" else folder / "fold_all" / "checkpoint_final.pth"
    out = tmp_path / "pred"
    cfg = compose_config("predict", [f"checkpoint={checkpoint}", f"input={root}", f"output={out}", "device=cpu"])
    with pytest.raises(SystemExit) as stop:
        entry("asa-predict", predict, cfg)
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-predict]")]
    assert stop.value.code == EXIT_REFUSED and len(said) == 1, said
    expected = (
        f"[asa-predict] refused: checkpoint={checkpoint}: an nnU-Net v2 results folder (Dataset501_asa_ibsr, "
        "nnUNetTrainer__nnUNetPlans__3d_fullres, fold all; asa-export wrote it from last.pt (step 1)), which nnU-Net's "
        f"predictor runs, not asa-predict: nnUNetv2_predict_from_modelfolder -i IMAGES -o PREDICTIONS -m {folder} "
        "-f all, or with the folder placed as $nnUNet_results/Dataset501_asa_ibsr/nnUNetTrainer__nnUNetPlans__3d_fullres: "
        "nnUNetv2_predict -i IMAGES -o PREDICTIONS -d 501 -c 3d_fullres -f all (images named <case>_0000.nii.gz, ...). "
        "asa-predict reads the fine-tuning checkpoint (best.pt, last.pt) it came from")
    assert said[0] == expected
    assert "segmenter.pt" not in said[0] and not out.exists()


def test_nnunet_s_own_folder_names_its_trainer_and_plans(exported, tmp_path):
    """A folder nnU-Net trained (named <trainer>__<plans>__<configuration>, five folds) gets its own names."""
    import shutil

    _, folder = exported
    own = tmp_path / "Dataset501_asa_ibsr" / "nnUNetTrainerNoMirroring__nnUNetResEncUNetMPlans__3d_fullres"
    shutil.copytree(folder, own)
    for fold in range(2):
        shutil.copytree(own / "fold_all", own / f"fold_{fold}")
    with pytest.raises(OptionError, match=re.escape(
            "nnUNetv2_predict -i IMAGES -o PREDICTIONS -d 501 -c 3d_fullres -tr nnUNetTrainerNoMirroring "
            "-p nnUNetResEncUNetMPlans -f 0 1 all")):
        predict(compose_config("predict", [f"checkpoint={own}", f"input={tmp_path}", f"output={tmp_path / 'p'}"]))
