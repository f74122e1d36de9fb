"""A network registered from outside the package, as a third party ships one: dynamic-network-architectures'
``PlainConvUNet`` declared in its own module and installed through the ``asa.networks`` entry point, then
fine-tuned, predicted and fine-tuned again from its own checkpoint with no asa constant patched; its family, declared
once in the module (`asa.models.Family`: its masked twin on asa's masked convolutions, its encoder read as nnU-Net's
stages, the network nnU-Net builds of it: dynamic-network-architectures' ``PlainConvUNet``), is pretrained with
``model=plain_unet``, exported (asa's files, nnU-Net's, which nnU-Net's own loader fills its network from, and
nnssl's, which asa reads back), probed and fine-tuned from asa's export and from the nnssl file. Its input
size is read off the spec asa built it from (`asa.models.input_size`), its encoder off its record, and the
encoder loader it uses is the one every dynamic-network-architectures encoder takes: the input projection
the network declares (``keys_to_in_proj``)."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch

from asa.api import evaluate, export_model, finetune, predict, pretrain, probe
from asa.formats.nnunet import NNUNET_PLANS, NNUNET_WEIGHTS
from asa.api.config import compose_config, load_config
from asa.api.machinery.networks import build_from_config
from asa.data import discover, write_demo_dataset
from asa.io.hub import NNSSL_CHECKPOINT
from asa.io import load_checkpoint
from asa.models import build_network, encoder_keys, input_size, load_weights, registry
from asa.formats.nnunet import NNUNET_CONFIGURATION

# the plug-in: one module of the third party's package (what the asa.networks entry point names)
PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

import torch
from asa.models import (Family, NetworkSettings, NNUNetForm, StageTokens, load_weights, register_family,
                        register_network)
from asa.models.cnn.masked import ResEncMAEOutput, VisibleMask, mask_encoder
from asa.models.blocks.encoder_weights import match_file_encoder
from asa.models.keys import EncoderKeys


@dataclass
class PlainUNetSettings(NetworkSettings):
    features: int = 4  # channels of the first stage (doubled per stage)


class PlainUNet(PlainConvUNet):
    def load_pretrained(self, path: str | Path, checkpoint: dict | None = None, verbose: bool = True):
        blob = load_weights(path) if checkpoint is None else checkpoint
        own = self.encoder.state_dict(prefix="encoder.")
        update, report = match_file_encoder(own, blob, path, in_proj=EncoderKeys.declared(self).in_proj_weights,
                                            image_channels=1)
        self.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in update.items()}, strict=True)
        return report


def _arch_kwargs(spec: dict, source: str) -> dict:  # the U-Net of _unet below in nnU-Net's plans
    f = int(spec["kwargs"].get("features", 4))
    return {"n_stages": 3, "features_per_stage": [f, 2 * f, 4 * f], "conv_op": "torch.nn.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2] * 3,
            "n_conv_per_stage_decoder": [1, 1], "conv_bias": True, "norm_op": "torch.nn.InstanceNorm3d",
            "norm_op_kwargs": {"affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": None}


def _spec(arch_kwargs: dict, in_channels: int, crop: int) -> dict:  # an nnU-Net / nnssl file of it, read back
    return {"arch": "plain_unet", "kwargs": {"img_size": [crop] * 3, "in_channels": in_channels,
                                             "out_channels": in_channels,
                                             "features": int(arch_kwargs["features_per_stage"][0])}}


def _unet(cls: type[PlainUNet], in_channels: int, out_channels: int, features: int) -> PlainUNet:
    return cls(in_channels, 3, [features, 2 * features, 4 * features], nn.Conv3d, 3, [1, 2, 2], 2,
               out_channels, 1, conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
               nonlin=nn.LeakyReLU, deep_supervision=False)


@register_network("plain_unet", kind="segmentation", settings=PlainUNetSettings, family="plain_unet")
def plain_unet(*, img_size, in_channels: int, out_channels: int, features: int = 4) -> PlainUNet:
    return _unet(PlainUNet, in_channels, out_channels, features)


@dataclass
class PlainUNetPretrainSettings:  # asa-pretrain model=plain_unet (its masking is its own: model.mask_block)
    arch: str = "plain_unet"
    features: int = 4
    mask_block: int = 16


class MaskedPlainUNet(PlainUNet):
    """The U-Net as a masked autoencoder on asa's masked convolutions: blocks of ``mask_block`` voxels hidden
    from the encoder, the image reconstructed, the squared error over the hidden voxels."""

    def masked(self, edge: int, mask_ratio: float, mask_block: int) -> "MaskedPlainUNet":
        self.grid = (edge // min(mask_block, edge // 2),) * 3  # two blocks per axis at least
        self.num_masked = round(mask_ratio * self.grid[0] ** 3)
        self.visible = VisibleMask()
        mask_encoder(self.encoder, self.visible)
        return self

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> ResEncMAEOutput:
        order = torch.rand(x.shape[0], self.grid[0] ** 3, device=x.device).argsort(dim=1)
        mask = torch.zeros_like(order, dtype=x.dtype).scatter_(1, order[:, : self.num_masked], 1.0)  # [B, n] 1: hidden
        self.visible.set((1 - mask).view(-1, 1, *self.grid))
        try:
            hidden = 1 - self.visible.at(tuple(x.shape[2:]), x.dtype)  # [B, 1, D, H, W]
            pred = self.decoder(self.encoder(x * (1 - hidden)))
        finally:
            self.visible.set(None)
        loss = ((pred - x) ** 2 * hidden).sum() / (hidden.sum() * x.shape[1])
        return ResEncMAEOutput(loss, pred, mask, mask / mask.sum(dim=1, keepdim=True), mask)


@register_network("plain_unet_pretrain", kind="pretraining", family="plain_unet")
def plain_unet_pretrain(*, img_size, in_channels: int = 1, features: int = 4, mask_ratio: float = 0.75,
                        mask_block: int = 16) -> MaskedPlainUNet:
    return _unet(MaskedPlainUNet, in_channels, in_channels, features).masked(int(img_size), mask_ratio, mask_block)


# the family, declared once: asa-pretrain model=plain_unet builds its masked twin; its encoder is read as nnU-Net's
# stages; nnU-Net builds it as dynamic-network-architectures' PlainConvUNet, so asa-export writes nnU-Net's and nnssl's
# files of it, and reads such files back
register_family(Family("plain_unet", face=StageTokens(), masked="plain_unet_pretrain",
                       pretrain_settings=PlainUNetPretrainSettings, segmenter="plain_unet",
                       nnunet=NNUNetForm("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                         _arch_kwargs, _spec)))
'''


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """The plug-in's module on the path and named by an ``asa.networks`` entry point, read as a fresh process
    reads the group; its registration is gone after the test."""
    (tmp_path / "plain_unet_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = {registry.ENTRY_POINT_GROUP: [importlib.metadata.EntryPoint(
        "plain_unet", "plain_unet_plugin:plain_unet", registry.ENTRY_POINT_GROUP)]}
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries.get(group, []))
    monkeypatch.setattr(registry.RECORDS, "_read", False)
    for name in ("plain_unet", "plain_unet_pretrain"):
        monkeypatch.setitem(registry.RECORDS, name, None)  # restored (removed) after the test
        monkeypatch.delitem(registry.RECORDS, name)
    monkeypatch.setitem(registry.FAMILIES, "plain_unet", None)
    monkeypatch.delitem(registry.FAMILIES, "plain_unet")
    monkeypatch.delitem(__import__("sys").modules, "plain_unet_plugin", raising=False)


def test_the_input_size_is_declared_by_the_spec_asa_built_it_from(installed):
    net = build_network({"arch": "plain_unet", "kwargs": {"img_size": (16,) * 3, "in_channels": 1, "out_channels": 2}})
    assert not hasattr(net, "img_size") and input_size(net) == (16, 16, 16)
    assert encoder_keys(net).module == "encoder" and net.keys_to_in_proj  # declared by dynamic-network-architectures
    with pytest.raises(ValueError, match="no input size declared"):
        input_size(torch.nn.Conv3d(1, 1, 1))


@pytest.mark.slow
def test_a_plugin_network_is_fine_tuned_predicted_and_fine_tuned_from_its_own_run(installed, tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "data", cases=4, size=20, seed=1)
    common = ["data=ibsr", f"data.root={root}", "data.crop=16", "trainer=smoke", "device=cpu", "data.num_workers=0",
              "trainer.max_steps=2", "trainer.epochs=2", "trainer.amp=off", "model=plain_unet"]
    first = tmp_path / "first"
    result = finetune(compose_config("finetune", [*common, "model.features=2", f"output_dir={first}"]))
    assert result.step == 2 and result.nonfinite_steps == 0
    ckpt = load_checkpoint(first / "checkpoints" / "last.pt")
    assert ckpt["network"]["arch"] == "plain_unet" and ckpt["network"]["kwargs"]["features"] == 2

    preds = tmp_path / "pred"
    written = predict(compose_config("predict", [
        f"checkpoint={first / 'checkpoints' / 'last.pt'}", f"input={root}", f"output={preds}", "device=cpu", "amp=off"]))
    assert sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in discover("ibsr", root))
    summary = evaluate(compose_config("evaluate", ["data=ibsr", f"data.root={root}", f"pred={preds}",
                                                   f"output={tmp_path / 'eval'}"]))
    assert 0 <= summary["GM"]["Dice"]["mean"] <= 1

    # its own checkpoint starts another network's encoder: every encoder tensor taken (the decoder fresh)
    net = build_from_config({"arch": "plain_unet", "features": 2, "pretrained": str(first / "checkpoints" / "last.pt")},
                            {}, in_channels=1, out_channels=4, crop=16)
    assert input_size(net) == (16, 16, 16)
    saved = {k.removeprefix("encoder."): v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    assert saved and all(torch.equal(v, saved[k]) for k, v in net.encoder.state_dict().items())


# each family's smallest masked twin; the plug-in's stages stride 1, 2, 2: probe tokens at stride 4
DEFAULT_PROBE_RUNS = {"resenc": (["model=resenc", "model.size=tiny"], 8), "primus": (["model=primus", "model.size=tiny"], 8),
                      "plain_unet": (["model=plain_unet", "model.features=2", "model.mask_block=8"], 4)}


@pytest.mark.slow
@pytest.mark.parametrize("family", DEFAULT_PROBE_RUNS)
def test_every_family_pretrains_with_the_default_probe_in_tensorboard(installed, tmp_path, family):
    """The frozen-encoder probe is on by default for a CNN family too: its tokens are the encoder face's, one per
    patch of the face's stride (the bottleneck of a U-Net), scored on the default probe set, logged to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from asa.api.machinery.pretraining import _method

    overrides, stride = DEFAULT_PROBE_RUNS[family]
    cfg = load_config("pretrain", *overrides, "method=mae", "data.crop=32", "data.demo.size=40", "data.demo.cases=4",
                      f"data.demo.cache_dir={tmp_path / 'cache'}", "trainer=smoke", "trainer.max_steps=1",
                      "trainer.panel_every=0", f"output_dir={tmp_path / 'pre'}", "device=cpu", "trainer.amp=off")
    method = _method(cfg)
    assert method.probe_stride(method.build_network()) == stride
    pretrain(cfg)
    events = EventAccumulator(str(tmp_path / "pre" / "tb"))
    events.Reload()
    logged = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    probe_tags = {"probe/r2_CSF", "probe/r2_GM", "probe/r2_WM", "probe/r2_mean", "probe/knn_acc"}
    assert probe_tags <= set(logged), sorted(logged)
    assert all(0 <= v <= 1 for v in logged["probe/knn_acc"]) and all(v <= 1 for v in logged["probe/r2_mean"])


def _nnunet_takes_it(export, encoder) -> None:
    """nnU-Net's own plans reader builds the network of the exported configuration (a PlainConvUNet, as the family
    declares) and its own ``-pretrained_weights`` loader fills it: every encoder tensor is the export's."""
    snippet = json.loads((export / NNUNET_PLANS).read_text())["configurations"][NNUNET_CONFIGURATION]
    assert snippet["architecture"]["network_class_name"].endswith(".PlainConvUNet")
    assert snippet["patch_size"] == [32] * 3
    assert torch.load(export / NNSSL_CHECKPOINT, weights_only=True)["nnssl_adaptation_plan"]["architecture_plans"][
        "arch_class_name"] == "PlainConvUNet"
    pytest.importorskip("nnunetv2")
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager({"dataset_name": "Dataset001_Brain", "plans_name": "nnUNetPlans", "configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                       "patch_size": [64] * 3, "spacing": [1.0] * 3},
        NNUNET_CONFIGURATION: snippet}})
    net = nnUNetTrainer.build_network_architecture(manager, manager.get_configuration(NNUNET_CONFIGURATION), 1, 3, True)
    assert type(net).__name__ == "PlainConvUNet"
    load_pretrained_weights(net, str(export / NNUNET_WEIGHTS))
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in encoder["encoder"].items())


@pytest.mark.slow
def test_a_plugin_network_is_pretrained_by_its_masked_twin_exported_and_fine_tuned_from_the_export(installed, tmp_path):
    pre = tmp_path / "pre"
    pretrain(compose_config("pretrain", [
        "model=plain_unet", "model.features=2", "model.mask_block=8", "method=mae", "data.crop=32", "data.demo.size=40",
        "data.demo.cases=4", f"data.demo.cache_dir={tmp_path / 'cache'}", "trainer=smoke", "trainer.max_steps=2",
        f"output_dir={pre}", "device=cpu", "trainer.amp=off"]))
    export = tmp_path / "export"
    export_model(pre / "checkpoints" / "last.pt", export)
    encoder = load_weights(export)
    assert encoder["network"]["arch"] == "plain_unet_pretrain" and all(k.startswith("encoder.") for k in encoder["encoder"])
    assert encoder["network"]["kwargs"]["mask_block"] == 8  # the family's masking option, named in its model section
    _nnunet_takes_it(export, encoder)

    # the nnssl file asa-export wrote is read back as the family's segmenter, every encoder tensor the export's
    published = load_weights(export / NNSSL_CHECKPOINT)
    assert published["network"] == {"arch": "plain_unet", "kwargs": {"img_size": [32] * 3, "in_channels": 1,
                                                                    "out_channels": 1, "features": 2}}
    assert published["encoder"].keys() == encoder["encoder"].keys()
    assert all(torch.equal(v, encoder["encoder"][k]) for k, v in published["encoder"].items())

    root = write_demo_dataset("ibsr", tmp_path / "data", cases=4, size=32, seed=3)
    run = tmp_path / "ft"
    result = finetune(compose_config("finetune", [
        "data=ibsr", f"data.root={root}", "data.crop=32", "model=plain_unet", "model.features=2",
        f"model.pretrained={export}", "trainer=smoke", "trainer.max_steps=1", f"output_dir={run}", "device=cpu",
        "data.num_workers=0", "trainer.amp=off"]))
    assert result.step == 1 and result.nonfinite_steps == 0
    # before its first step the fine-tuning network held the export's encoder, tensor for tensor: rebuild that
    fresh = build_network(load_checkpoint(run / "checkpoints" / "last.pt")["network"])
    assert not torch.equal(fresh.state_dict()["encoder.stages.0.0.convs.0.conv.weight"],
                           encoder["encoder"]["encoder.stages.0.0.convs.0.conv.weight"])
    fresh.load_pretrained(export, verbose=False)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in encoder["encoder"].items())
    # and from the nnssl file: fine-tuned as from asa's own export, the same encoder to start from
    result = finetune(compose_config("finetune", [
        "data=ibsr", f"data.root={root}", "data.crop=32", "model=plain_unet", "model.features=2",
        f"model.pretrained={export / NNSSL_CHECKPOINT}", "trainer=smoke", "trainer.max_steps=1",
        f"output_dir={tmp_path / 'ft-nnssl'}", "device=cpu", "data.num_workers=0", "trainer.amp=off"]))
    assert result.step == 1 and result.nonfinite_steps == 0
    fresh.load_pretrained(export / NNSSL_CHECKPOINT, verbose=False)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in encoder["encoder"].items())

    # the fine-tuned network exports its encoder too, and the probes read both exports' features
    export_model(run / "checkpoints" / "last.pt", tmp_path / "tuned")
    tuned = load_weights(tmp_path / "tuned")
    assert tuned["network"]["arch"] == "plain_unet" and tuned["encoder"].keys() == encoder["encoder"].keys()
    record = probe(compose_config("probe", [f"encoders=[{export},{tmp_path / 'tuned'}]", "data=ibsr", f"data.root={root}",
                                            f"output={tmp_path / 'probe'}", "device=cpu", "folds=2", "bootstrap=20",
                                            "knn_k=2", "data.accept_pretraining_overlap=true"]))
    assert [row["arch"] for row in record["rows"]] == ["plain_unet_pretrain", "plain_unet"]
