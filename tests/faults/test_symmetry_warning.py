"""Symmetry-aware networks on data that is not brain MRI are fine-tuned with a warning (issue #35): an MSD
``dataset.json`` whose channels are CT used to train model=sa_swin, or the SW-ViT's symmetric position code,
without a word, although both assume a brain MRI with its mid-sagittal plane at the crop centre."""

from __future__ import annotations

import json

import pytest

from asa.api import compose_config, finetune
from asa.api.tasks.segmentation import symmetry_warning
from asa.data import non_mri_channels, write_demo_dataset
from asa.models import PRESETS, Capabilities, build_network, capabilities

TINY_SWIN = {"img_size": 64, "in_channels": 1, "out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
             "num_heads": [1, 1, 2, 4]}
TINY_ASA = {"img_size": 32, "in_channels": 1, "out_channels": 2,
            **{k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}}


@pytest.mark.parametrize("channels, other", [
    (("FLAIR", "T1w", "t1gd", "T2w"), ()),  # MSD Task01 BrainTumour
    (("T2", "ADC"), ()),  # MSD Task05 Prostate
    (("MRI",), ()),  # MSD Task02 Heart, Task04 Hippocampus
    (("t1", "t1ce", "T2_FLAIR", "PD", "DWI", "SWI"), ()),
    (("CT",), ("CT",)),  # MSD Task03 Liver, Task06 Lung, ...
    (("CT", "PET"), ("CT", "PET")),
    (("T1w", "zscore"), ("zscore",)),  # an nnU-Net normalisation scheme says nothing of the modality
])
def test_channels_that_name_no_mri_sequence(channels, other):
    assert non_mri_channels(channels) == other


@pytest.mark.parametrize("arch, kwargs, parts", [
    ("swvit_unetr", {}, ["model.pos_mode=mirror (the symmetric position code)"]),
    ("swvit_unetr", {"pos_mode": "paper"}, ["model.pos_mode=paper (the symmetric position code)"]),
    ("swvit_unetr", {"pos_mode": "none"}, []),
    ("swvit_unetr", {"pos_mode": "none", "saca": "encoder"}, ["model.saca (cross-attention to the mirror window)"]),
    ("sa_swin", {}, ["model=sa_swin (cross-attention to the left-right mirrored image)"]),
    ("swin_unetr", {}, []),
])
def test_networks_declare_their_symmetric_parts(arch, kwargs, parts):
    base = TINY_SWIN if arch != "swvit_unetr" else TINY_ASA
    net = build_network({"arch": arch, "kwargs": {**base, **kwargs}})
    assert list(capabilities(net).symmetry) == parts


def test_the_warning_names_the_channels_and_the_assumption():
    declared = Capabilities(symmetry=("model=sa_swin (cross-attention to the left-right mirrored image)",))
    assert symmetry_warning(declared, ("FLAIR", "T1w"), "d/dataset.json") is None  # brain MRI: nothing to say
    assert symmetry_warning(Capabilities(), ("CT",), "d/dataset.json") is None  # no symmetric part: nothing either
    message = symmetry_warning(declared, ("CT", "T1w"), "d/dataset.json")
    assert message.startswith("d/dataset.json names the channels ['CT', 'T1w'], of which ['CT'] name no MRI "
                              "sequence: model=sa_swin (cross-attention to the left-right mirrored image) assume a "
                              "left-right symmetric brain MRI with its mid-sagittal plane at the crop centre, "
                              "which may not hold")


def _ct_dataset(tmp_path):
    """A 1-channel MSD dataset whose dataset.json says CT (the demo phantoms' first channel under that name)."""
    root = write_demo_dataset("msd", tmp_path / "ct", cases=4, size=32, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["channel_names"]
    meta["modality"] = {"0": "CT"}  # MSD's key; nnU-Net v2 says channel_names
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.slow
def test_finetune_warns_on_a_ct_dataset_and_trains(tmp_path, capsys):
    root = _ct_dataset(tmp_path)
    args = ["data=msd", f"data.root={root}", "model=tiny", "trainer=smoke", "device=cpu", "data.num_workers=0",
            "data.crop=32", "trainer.panel_every=0"]
    result = finetune(compose_config("finetune", [*args, f"output_dir={tmp_path / 'mirror'}"]))
    assert result.step >= 1  # a warning, not a refusal
    err = capsys.readouterr().err
    assert (f"[asa] warning: {root / 'dataset.json'} names the channels ['CT'], of which ['CT'] name no MRI "
            "sequence: model.pos_mode=mirror (the symmetric position code) assume a left-right symmetric brain MRI"
            ) in err

    finetune(compose_config("finetune", [*args, "model.pos_mode=none", f"output_dir={tmp_path / 'plain'}"]))
    assert "MRI sequence" not in capsys.readouterr().err  # no symmetric part, no warning
