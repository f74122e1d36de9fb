"""asa-export of a resenc encoder into nnU-Net v2: nnU-Net's own plans reader builds the network from the
exported plans configuration, nnU-Net's own ``-pretrained_weights`` loader fills it from the exported file,
and every encoder tensor is then asa's (the stem adapted to the task's channels)."""
from __future__ import annotations

import json

import pytest
import torch

from asa.api.export import export_model
from asa.formats.nnunet import NNUNET_PLANS, NNUNET_WEIGHTS
from asa.cli.export import main as export_main
from asa.io import save_checkpoint
from asa.models import load_weights, network_spec
from asa.models.cnn.family import RESENC_NNUNET
from asa.formats.nnunet import NNUNET_CONFIGURATION
from asa.models.cnn.resenc import resenc_unet

STEM = "encoder.stem.convs.0.conv.weight"


@pytest.fixture(scope="module")
def resenc_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("resenc")
    torch.manual_seed(3)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    for p in net.parameters():
        p.data.normal_()
    save_checkpoint(root / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 7})
    out = export_model(root / "last.pt", root / "model", nnunet_channels=2)
    return root, out, net


def test_plans_block_is_nnunets_resenc_block(resenc_export):
    _, out, net = resenc_export
    config = json.loads((out / NNUNET_PLANS).read_text())["configurations"][NNUNET_CONFIGURATION]
    arch = config["architecture"]
    assert config["inherits_from"] == "3d_fullres" and config["patch_size"] == [32, 32, 32]
    assert arch["network_class_name"] == RESENC_NNUNET.network_class
    assert arch["_kw_requires_import"] == ["conv_op", "norm_op", "dropout_op", "nonlin"]
    assert arch["arch_kwargs"]["features_per_stage"] == net.plan.features
    assert arch["arch_kwargs"]["strides"] == [[s] * 3 for s in net.plan.strides]
    assert arch["arch_kwargs"]["n_blocks_per_stage"] == net.plan.blocks
    card = (out / "README.md").read_text()
    assert f"nnUNetv2_train DatasetXXX {NNUNET_CONFIGURATION} FOLD -p <plans> -tr nnUNetTrainer_warmup " \
           "-pretrained_weights" in card  # the trainer docs/weights-elsewhere.md recommends
    assert '"overwrite_image_reader_writer": "NibabelIOWithReorient"' in card


def test_nnunet_loader_fills_every_encoder_tensor(resenc_export):
    pytest.importorskip("nnunetv2")
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    _, out, net = resenc_export
    snippet = json.loads((out / NNUNET_PLANS).read_text())
    plans = {"dataset_name": "Dataset001_Brain", "plans_name": "nnUNetPlans", "configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                       "patch_size": [128, 128, 128], "spacing": [1.0, 1.0, 1.0],
                       "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}},
        **snippet["configurations"]}}
    manager = PlansManager(plans)
    configuration = manager.get_configuration(NNUNET_CONFIGURATION)
    assert configuration.patch_size == [32, 32, 32] and configuration.data_identifier == "nnUNetPlans_3d_fullres"
    nn_net = nnUNetTrainer.build_network_architecture(manager, configuration, 2, 4, True)  # 2 channels, 4 classes
    before = {k: v.clone() for k, v in nn_net.state_dict().items()}
    load_pretrained_weights(nn_net, str(out / NNUNET_WEIGHTS))
    loaded = nn_net.state_dict()
    ours = net.state_dict()
    encoder_keys = [k for k in ours if k.startswith("encoder.")]
    assert encoder_keys and all(k in loaded for k in encoder_keys)
    for key in encoder_keys:
        if key in (STEM, "encoder.stem.convs.0.all_modules.0.weight"):
            assert torch.equal(loaded[key], ours[key].repeat(1, 2, 1, 1, 1) / 2), key
        else:
            assert torch.equal(loaded[key], ours[key]), key
    heads = [k for k in loaded if ".seg_layers." in k]
    assert heads and all(torch.equal(loaded[k], before[k]) for k in heads)  # nnU-Net's fresh heads, untouched
    x = torch.randn(1, 2, 32, 32, 32)
    nn_net.eval()
    assert nn_net(x)[0].shape == (1, 4, 32, 32, 32)


def test_export_without_nnunet_for_other_channels_is_refused(resenc_export, tmp_path, capsys):
    root, _, _ = resenc_export
    code = export_main([str(root / "last.pt"), str(tmp_path / "m"), "--nnunet-channels", "0"])
    assert code == 2
    assert "nnunet in_channels=0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_published_checkpoint_exports_to_nnunet(tmp_path):
    """A published file (nnssl layout) goes through asa-export into nnU-Net's format unchanged."""
    from tests.fixtures.published import nnssl_checkpoint

    blob = nnssl_checkpoint()
    torch.save(blob, tmp_path / "checkpoint_final.pth")
    assert export_main([str(tmp_path / "checkpoint_final.pth"), str(tmp_path / "m")]) == 0
    weights = torch.load(tmp_path / "m" / NNUNET_WEIGHTS, weights_only=True)["network_weights"]
    for key, value in blob["network_weights"].items():
        if key.startswith("encoder."):
            assert torch.equal(weights[key], value), key
    assert load_weights(tmp_path / "m")["network"]["kwargs"]["features"] == [8, 16, 32, 64]


def _plans_file(path):
    plans = {"dataset_name": "Dataset137_BraTS2021", "plans_name": "nnUNetResEncUNetLPlans",
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [128] * 3}},
             "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0}}}
    path.write_text(json.dumps(plans))
    return plans


def test_nnunet_plans_option_adds_the_configuration(resenc_export, tmp_path, capsys):
    """--nnunet-plans writes 3d_fullres_asa into the dataset's plans (every other key kept), so nnUNetv2_train
    runs it as it is; a second export with another network there needs --overwrite; a plans file without
    3d_fullres (not planned yet) is refused with nothing written."""
    root, out, _ = resenc_export
    plans_path = tmp_path / "nnUNetResEncUNetLPlans.json"
    before = _plans_file(plans_path)
    assert export_main([str(root / "last.pt"), str(tmp_path / "m"), "--nnunet-plans", str(plans_path)]) == 0
    plans = json.loads(plans_path.read_text())
    snippet = json.loads((out / NNUNET_PLANS).read_text())["configurations"]
    assert plans == {**before, "configurations": {**before["configurations"], **snippet}}
    assert f"added configuration {NNUNET_CONFIGURATION}" in capsys.readouterr().err

    changed = {**plans, "configurations": {**plans["configurations"], NNUNET_CONFIGURATION: {"inherits_from": "x"}}}
    plans_path.write_text(json.dumps(changed))
    assert export_main([str(root / "last.pt"), str(tmp_path / "m2"), "--nnunet-plans", str(plans_path)]) == 2
    assert "already holds another 3d_fullres_asa" in capsys.readouterr().err and not (tmp_path / "m2").exists()

    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"configurations": {"2d": {}}}))
    assert export_main([str(root / "last.pt"), str(tmp_path / "m3"), "--nnunet-plans", str(bare)]) == 2
    assert "has no configuration '3d_fullres'" in capsys.readouterr().err and not (tmp_path / "m3").exists()


def test_a_full_disk_leaves_no_folder_that_looks_finished(tmp_path, monkeypatch, capsys):
    """The nnU-Net pair (and segmenter.pt) are written with the three files, before the folder is renamed into
    place: a failing write leaves no folder, and no temporary one."""
    import errno

    import asa.formats.nnunet as export_module  # the nnU-Net pair's writer
    from asa.models import build_network, network_spec

    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "size": "tiny"}})
    ckpt = save_checkpoint(tmp_path / "last.pt", {"network": network_spec(net), "model": net.state_dict(), "step": 1})

    def full(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export_module, "save_checkpoint", full)
    out = tmp_path / "model"
    assert export_main([str(ckpt), str(out)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
