"""Published residual-encoder checkpoints into asa: nnssl / OpenMind (``network_weights`` +
``nnssl_adaptation_plan``) and AMAES (a Lightning ``state_dict`` of gardening_tools' ResidualEncoderUNet),
built here as synthetic files in each layout at the tiny 32³ plan. Each loads tensor for tensor into
``asa.load_encoder`` and a fine-tuning ``resenc``; a damaged copy is refused with the key named."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import asa
from asa.api.machinery.networks import build_from_config
from asa.io import CheckpointError, load_checkpoint
from asa.models import load_weights
from asa.models.cnn.resenc import resenc_unet
from tests.fixtures.published import CROP, PLAN, nnssl_checkpoint


def _gardening_conv(prefix: str, cin: int, cout: int, k: int, bias: bool, gen: torch.Generator) -> dict:
    """gardening_tools ConvDropoutNormNonlin without dropout: ``conv``, ``norm_op`` and ``all_modules`` [conv, norm]
    naming the same tensors (components/blocks.py)."""
    conv_w = torch.randn(cout, cin, k, k, k, generator=gen)
    out = {f"{prefix}.conv.weight": conv_w, f"{prefix}.all_modules.0.weight": conv_w}
    if bias:
        conv_b = torch.randn(cout, generator=gen)
        out |= {f"{prefix}.conv.bias": conv_b, f"{prefix}.all_modules.0.bias": conv_b}
    norm_w, norm_b = torch.randn(cout, generator=gen), torch.randn(cout, generator=gen)
    return out | {f"{prefix}.norm_op.weight": norm_w, f"{prefix}.norm_op.bias": norm_b,
                  f"{prefix}.all_modules.1.weight": norm_w, f"{prefix}.all_modules.1.bias": norm_b}


def amaes_checkpoint(prefix: str = "model.", seed: int = 0) -> dict:
    """A Lightning checkpoint of asparagus' ResEnc U-Net (gardening_tools ResidualEncoderUNet): encoder
    ``stem.conv1``, ``stages.<s>.blocks.<b>.conv1 / conv2 / skip.1`` (average pool, then a 1x1 conv without bias
    when the channels change), and a decoder of its own naming."""
    gen = torch.Generator().manual_seed(seed)
    state = _gardening_conv(f"{prefix}encoder.stem.conv1", 1, PLAN.features[0], 3, True, gen)
    cin = PLAN.features[0]
    for s, (cout, n) in enumerate(zip(PLAN.features, PLAN.blocks)):
        for b in range(n):
            block = f"{prefix}encoder.stages.{s}.blocks.{b}"
            state |= _gardening_conv(f"{block}.conv1", cin, cout, 3, True, gen)
            state |= _gardening_conv(f"{block}.conv2", cout, cout, 3, True, gen)
            if cin != cout:
                state |= _gardening_conv(f"{block}.skip.1", cin, cout, 1, False, gen)
            cin = cout
    state[f"{prefix}decoder.upsample_layers.0.weight"] = torch.randn(64, 32, 2, 2, 2, generator=gen)
    state[f"{prefix}decoder.out_conv.weight"] = torch.randn(1, 8, 1, 1, 1, generator=gen)
    return {"state_dict": state, "epoch": 99, "global_step": 1234, "pytorch-lightning_version": "2.5.0",
            "hyper_parameters": {"learning_rate": 1e-4, "compile_mode": None}}


def _amaes_name(key: str) -> str:
    """The gardening_tools name of an asa (dynamic-network-architectures) encoder key, written out for the test."""
    return "model." + key.replace("encoder.stem.convs.0.", "encoder.stem.conv1.").replace(".norm.", ".norm_op.")


@pytest.fixture()
def files(tmp_path):
    nnssl, amaes = tmp_path / "checkpoint_final.pth", tmp_path / "last.ckpt"
    torch.save(nnssl_checkpoint(), nnssl)
    torch.save(amaes_checkpoint(), amaes)
    return {"nnssl": nnssl, "amaes": amaes}


def test_nnssl_layout_loads_every_encoder_tensor(files, capsys):
    blob = torch.load(files["nnssl"], weights_only=True)
    encoder = asa.load_encoder(files["nnssl"])
    report = capsys.readouterr().out
    own = encoder.state_dict()
    assert set(own) == {k.removeprefix("encoder.") for k in blob["network_weights"] if k.startswith("encoder.")}
    for key, value in own.items():
        assert torch.equal(value, blob["network_weights"]["encoder." + key]), key
    assert f"loaded {len(own)} encoder tensors" in report
    assert "missing (0): -" in report and "unexpected (0): -" in report and "shape-mismatched (0): -" in report
    assert "published layout: nnssl (ResidualEncoderUNet)" in report
    assert "plan spacing: [1.0, 1.0, 1.0] mm (onemmiso)" in report
    assert "plan normalisation: ZScoreNormalization" in report
    assert f"plan crop: {CROP} (the file's recommended_patch [{CROP}, {CROP}, {CROP}])" in report
    out = encoder(torch.randn(1, 1, CROP, CROP, CROP))  # the stage outputs, finest first
    assert [o.shape[1] for o in out] == PLAN.features


def nnunet_trainer_checkpoint(seed: int = 0) -> dict:
    """checkpoint_final.pth as nnU-Net v2's ``nnUNetTrainer.save_checkpoint`` writes it
    (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py): the network's and the SGD optimiser's states, the
    logger's lists (numpy.float64 / float32 values: np.mean and np.nanmean of its per-batch arrays), ``_best_ema``
    (numpy.float64), the init arguments (the plans, a torch.device) and the mirroring axes."""
    net = resenc_unet(img_size=CROP, in_channels=1, out_channels=4, size="tiny")
    torch.manual_seed(seed)
    for p in net.parameters():
        p.data.normal_()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    net.train()(torch.randn(1, 1, CROP, CROP, CROP))[0].mean().backward()
    optimizer.step()
    dice = [np.float64(0.81), np.float64(0.77), np.float64(0.9)]
    logging = {"mean_fg_dice": [np.nanmean(dice)], "ema_fg_dice": [np.float64(0.8)], "dice_per_class_or_region": [dice],
               "train_losses": [np.mean(np.array([-0.5, -0.7], dtype=np.float32))],
               "val_losses": [np.mean(np.array([-0.4], dtype=np.float32))], "lrs": [0.01],
               "epoch_start_timestamps": [1.7e9], "epoch_end_timestamps": [1.7e9 + 80.0]}
    return {"network_weights": net.state_dict(), "optimizer_state": optimizer.state_dict(), "grad_scaler_state": None,
            "logging": logging, "_best_ema": np.float64(0.8), "current_epoch": 1000,
            "init_args": {"plans": {"dataset_name": "Dataset004_Hippocampus", "plans_name": "nnUNetResEncUNetMPlans",
                                    "configurations": {"3d_fullres": {"patch_size": [CROP, CROP, CROP + 8],
                                                                      "spacing": [1.0, 1.0, 1.0]}}},
                          "configuration": "3d_fullres", "fold": 0, "dataset_json": {"channel_names": {"0": "T1"}},
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}


def test_nnunet_trainer_checkpoint_with_numpy_values_loads_every_encoder_tensor(tmp_path, capsys):
    """nnU-Net's own checkpoint keeps numpy scalars: read with weights-only loading, numpy's scalar and dtype
    reconstructors allowed and nothing else (a numpy array in the same file is still refused)."""
    path = tmp_path / "checkpoint_final.pth"
    blob = nnunet_trainer_checkpoint()
    torch.save(blob, path)
    encoder = asa.load_encoder(path)
    report = capsys.readouterr().out
    assert "published layout: nnunet (nnUNetTrainer)" in report
    assert f"plan crop: {CROP} (the file's pretrain_patch [{CROP}, {CROP}, {CROP + 8}] -> {CROP}" in report  # its plans'
    del blob["init_args"]["plans"]["configurations"]
    torch.save(blob, tmp_path / "no_plans.pth")
    asa.load_encoder(tmp_path / "no_plans.pth")
    report = capsys.readouterr().out
    assert "not recorded in the file: 5 x the total stride 8" in report and "AMAES" not in report
    own = encoder.state_dict(prefix="encoder.")
    assert own and all(torch.equal(value, blob["network_weights"][key]) for key, value in own.items())
    state = load_checkpoint(path)
    assert state["_best_ema"] == 0.8 and isinstance(state["_best_ema"], np.float64)
    assert state["logging"]["train_losses"][0].dtype == np.float32
    torch.save({**blob, "array": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth: refused, nothing in it was run — it asks to "
                                              r"call numpy\._core\.multiarray\._reconstruct"):
        load_checkpoint(path)


def test_amaes_layout_loads_every_encoder_tensor(files, capsys):
    blob = torch.load(files["amaes"], weights_only=True)["state_dict"]
    encoder = asa.load_encoder(files["amaes"])
    report = capsys.readouterr().out
    own = encoder.state_dict(prefix="encoder.")
    for key, value in own.items():
        assert torch.equal(value, blob[_amaes_name(key)]), key
    assert "published layout: amaes" in report and "left out: 2 tensors" in report
    assert "plan spacing: not recorded" in report


def test_compiled_amaes_prefix(tmp_path):
    path = tmp_path / "compiled.ckpt"
    torch.save(amaes_checkpoint(prefix="model._orig_mod."), path)
    export = load_weights(path)
    assert export["foreign"]["layout"] == "amaes"
    assert export["network"]["kwargs"]["features"] == PLAN.features


@pytest.mark.parametrize("layout", ["nnssl", "amaes"])
def test_finetuning_resenc_adapts_the_stem(files, layout, capsys):
    """model=resenc model.pretrained=FILE with 2 image channels: the crop follows the checkpoint (data.crop unset),
    the topology too (model.size is the default), the 1-channel stem is repeated over both channels and divided
    by 2, every other encoder tensor equal."""
    net = build_from_config({"arch": "resenc", "size": "M", "pretrained": str(files[layout])}, {}, in_channels=2,
                            out_channels=3, crop=None, default_crop=128)
    assert net.img_size == ((CROP,) * 3 if layout == "nnssl" else (5 * PLAN.total_stride,) * 3)  # AMAES: 160 = 5 x 32
    source = load_weights(files[layout])["encoder"]
    stem = "encoder.stem.convs.0.conv.weight"
    own = net.encoder.state_dict(prefix="encoder.")
    assert torch.equal(own[stem], source[stem].repeat(1, 2, 1, 1, 1) / 2)
    for key, value in own.items():
        if key not in (stem, "encoder.stem.convs.0.all_modules.0.weight"):
            assert torch.equal(value, source[key]), key
    assert "1 -> 2 image channels (repeated, divided by 2)" in capsys.readouterr().out


def _damage(layout: str, blob: dict, how: str) -> str:
    """Damage one encoder tensor of ``blob`` in place; returns the asa name the refusal must give."""
    key = "encoder.stages.2.blocks.0.conv2.norm.weight"
    name = key if layout == "nnssl" else _amaes_name(key)
    state = blob["network_weights"] if layout == "nnssl" else blob["state_dict"]
    if how == "missing":
        del state[name]
    else:
        state[name] = torch.randn(state[name].shape[0] + 1)
    return key


@pytest.mark.parametrize("how", ["missing", "shape"])
@pytest.mark.parametrize("layout", ["nnssl", "amaes"])
def test_damaged_file_is_refused_naming_the_key(tmp_path, layout, how):
    blob = nnssl_checkpoint() if layout == "nnssl" else amaes_checkpoint()
    key = _damage(layout, blob, how)
    path = tmp_path / "damaged.pth"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="refused, not every encoder tensor matched") as err:
        asa.load_encoder(path)
    assert key in str(err.value) and str(err.value).startswith(f"asa.load_encoder('{path}'): refused")
    if how == "shape":
        assert "of another shape" in str(err.value)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        build_from_config({"arch": "resenc", "pretrained": str(path)}, {}, in_channels=1, out_channels=2, crop=None)
    assert f"model.pretrained={path}" in str(err.value)


def test_unexpected_stage_and_disagreeing_aliases_are_refused(tmp_path, files):
    """A ResEnc file deeper than the network (a crop of fewer halvings) and a file whose two names of one tensor
    differ are refused, never loaded in part."""
    shallow = resenc_unet(img_size=16, in_channels=1, out_channels=2, size="tiny")  # 3 stages; the file has 4
    with pytest.raises(ValueError, match=r"not in the network \(encoder\.stages\.3\."):
        shallow.load_pretrained(files["nnssl"])
    blob = nnssl_checkpoint()
    blob["network_weights"]["encoder.stem.convs.0.all_modules.0.weight"] = torch.zeros(8, 1, 3, 3, 3)
    path = tmp_path / "aliases.pth"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="encoder.stem.convs.0.conv.weight and encoder.stem.convs.0.all_modules.0.weight"):
        asa.load_encoder(path)


@pytest.mark.parametrize("layout", ["nnssl", "amaes"])
def test_the_file_layer_reads_nnunets_terms_and_the_family_gives_the_spec(files, layout):
    """asa.io reads a published file as it states itself (its layout, its network's tensors, its plan), knowing no
    architecture; the resenc family's nnU-Net form reads the network nnU-Net builds (its class and arch_kwargs) and
    turns it into the spec asa.models.load_weights returns."""
    from asa.io import read_weights
    from asa.models.cnn.family import RESENC_NNUNET

    read = read_weights(files[layout])
    assert "network" not in read and "encoder" not in read and "network_class" not in read["foreign"]
    assert read["foreign"]["layout"] == layout and len(read["weights"]) == len(torch.load(files[layout])[
        "network_weights" if layout == "nnssl" else "state_dict"])
    blob = load_weights(files[layout])
    info = blob["foreign"]
    assert info["network_class"] == "ResidualEncoderUNet"
    assert info["arch_kwargs"]["features_per_stage"] == PLAN.features
    spec = blob["network"]
    assert spec == RESENC_NNUNET.spec(info["arch_kwargs"], info["input_channels"], info["crop"])
    assert spec["arch"] == "resenc" and spec["kwargs"]["features"] == PLAN.features
    assert spec["kwargs"]["strides"] == PLAN.strides and spec["kwargs"]["blocks"] == PLAN.blocks


def test_other_nnssl_architecture_is_refused(tmp_path):
    blob = nnssl_checkpoint()
    blob["nnssl_adaptation_plan"]["architecture_plans"]["arch_class_name"] = "SwinUNETR"
    path = tmp_path / "swin.pth"
    torch.save(blob, path)
    with pytest.raises(ValueError, match=r"arch_class_name='SwinUNETR'; asa reads .*PrimusM"):
        asa.load_encoder(path)
    blob["nnssl_adaptation_plan"]["architecture_plans"]["arch_class_name"] = "PrimusM"  # read as Primus: keys differ
    torch.save(blob, path)
    with pytest.raises(ValueError, match=r"key_to_encoder='encoder.stages', expected 'eva'"):
        asa.load_encoder(path)


def test_a_file_of_other_image_channels_is_said_to_differ_not_to_be_damaged(tmp_path):
    """A 4-channel nnU-Net checkpoint (BraTS) fine-tuned on 1-channel data: the channels differ, the file is fine."""
    blob = nnunet_trainer_checkpoint()
    stem = "encoder.stem.convs.0.conv.weight"
    four = blob["network_weights"][stem].repeat(1, 4, 1, 1, 1)
    blob["network_weights"] |= {stem: four, "encoder.stem.convs.0.all_modules.0.weight": four}
    path = tmp_path / "checkpoint_final.pth"
    torch.save(blob, path)
    with pytest.raises(ValueError, match=rf"model.pretrained={path}: its encoder takes 4 image channel\(s\), this "
                                         r"network 1 \(the data's channels\); the file is fine, the channels differ"):
        build_from_config({"arch": "resenc", "pretrained": str(path)}, {}, in_channels=1, out_channels=3, crop=None,
                          default_crop=128)


def test_asas_own_resenc_export_sets_the_fine_tuning_crop(tmp_path):
    """data.crop unset: the crop of the pretraining run that wrote the file, as for an SW-ViT export and a
    published checkpoint (it used to be the default crop)."""
    from asa.io import save_checkpoint
    from asa.models import build_network, network_spec

    mae = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 64, "size": "tiny"}})
    path = save_checkpoint(tmp_path / "encoder.pt", {"network": network_spec(mae), "encoder": mae.encoder_state_dict(),
                                                     "step": 1})
    net = build_from_config({"arch": "resenc", "size": "tiny", "pretrained": str(path)}, {}, in_channels=1,
                            out_channels=2, crop=None, default_crop=128)
    assert net.img_size == (64, 64, 64)
    assert torch.equal(net.encoder.stem.convs[0].conv.weight, mae.encoder.stem.convs[0].conv.weight)
