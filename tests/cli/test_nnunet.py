"""asa-nnunet (asa.cli.nnunet): nnU-Net's own commands started after asa's torchvision import, a relative ``-pc``
made absolute, and one-line refusals. nnU-Net's nnssl route itself is run by benchmarks/nnunet_nnssl_route.py
(tests/benchmarks/test_nnssl_route.py reads its record)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from asa.cli.nnunet import absolute_checkpoint, main, nnunet_commands


@pytest.mark.parametrize("given,expected", [
    (["-d", "137", "-n", "asa", "-pc", "models/resenc-L/checkpoint_final.pth", "-am", "like_pretrained"],
     ["-d", "137", "-n", "asa", "-pc", "/work/here/models/resenc-L/checkpoint_final.pth", "-am", "like_pretrained"]),
    (["--pretrained_checkpoint", "../m/checkpoint_final.pth"], ["--pretrained_checkpoint", "/work/m/checkpoint_final.pth"]),
    (["-pc=./c.pth", "-d", "5"], ["-pc=/work/here/c.pth", "-d", "5"]),
    (["-pc", "/models/c.pth"], ["-pc", "/models/c.pth"]),  # absolute: as given
    (["-pc", "https://huggingface.co/owner/name"], ["-pc", "https://huggingface.co/owner/name"]),  # nnU-Net downloads it
    (["-p", "plans", "-pcx", "a"], ["-p", "plans", "-pcx", "a"]),  # another option, untouched
])
def test_a_relative_checkpoint_is_made_absolute_and_nothing_else_changes(given, expected):
    assert absolute_checkpoint(given, "/work/here") == expected


def test_no_command_or_another_tools_command_is_refused_in_one_line(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "[asa-nnunet] refused: no COMMAND given"
    assert main(["asa-pretrain", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("[asa-nnunet] refused: ")
    if nnunet_commands():
        assert "'asa-pretrain' is not one of nnU-Net's commands (" in err and "nnUNetv2_predict" in err
    else:
        assert "nnU-Net v2 is not installed" in err


@pytest.mark.slow
def test_nnunet_looks_a_trainer_up_by_name_through_asa_nnunet(tmp_path):
    """``nnUNetv2_train -tr nnUNetTrainer_warmup`` imports every trainer module before it (timm, torchvision, through
    the Primus trainers): through asa-nnunet it finds the trainer and goes on to the dataset (absent here); nnU-Net's
    own command stops at torchvision's import where torchvision's C operators do not load beside this torch."""
    pytest.importorskip("nnunetv2")
    env = {**os.environ, **{k: str(tmp_path / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    args = ["nnUNetv2_train", "997", "3d_fullres", "0", "-tr", "nnUNetTrainer_warmup", "-device", "cpu"]
    wrapped = subprocess.run([sys.executable, "-m", "asa.cli.nnunet", *args], capture_output=True, text=True, env=env,
                             timeout=300)
    assert wrapped.returncode != 0 and "torchvision::nms" not in wrapped.stderr, wrapped.stderr[-2000:]
    assert "Could not find a dataset with the ID 997" in wrapped.stderr, wrapped.stderr[-2000:]
    alone = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if alone.returncode != 0:  # this torch's torchvision does not import on its own: nnU-Net's command stops there
        own = subprocess.run([sys.executable, "-c", "import sys; from nnunetv2.run.run_training import "
                              "run_training_entry as m; sys.argv = sys.argv[1:]; m()", *args],
                             capture_output=True, text=True, env=env, timeout=300)
        assert own.returncode != 0 and "operator torchvision::nms does not exist" in own.stderr, own.stderr[-2000:]
