"""A network registered from outside the package, as a third party ships one: dynamic-network-architectures'
``PlainConvUNet`` declared in its own module and installed through the ``asa.networks`` entry point, then
fine-tuned, predicted and fine-tuned again from its own checkpoint with no asa constant patched. Its input
size is read off the spec asa built it from (`asa.models.input_size`), its encoder off its record, and the
encoder loader it uses is the one every dynamic-network-architectures encoder takes: the input projection
the network declares (``keys_to_in_proj``)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from asa.api import finetune, predict
from asa.api.config import compose_config
from asa.api.machinery.networks import build_from_config
from asa.data import discover, write_demo_dataset
from asa.io import load_checkpoint
from asa.models import build_network, input_size, registry

# the plug-in: one module of the third party's package (what the asa.networks entry point names)
PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from asa.io import load_weights
from asa.models import NetworkSettings, register_network
from asa.models.cnn.transfer import in_proj_keys, match_resenc_encoder


@dataclass
class PlainUNetSettings(NetworkSettings):
    features: int = 4  # channels of the first stage (doubled per stage)


class PlainUNet(PlainConvUNet):
    def load_pretrained(self, path: str | Path, checkpoint: dict | None = None, verbose: bool = True):
        blob = load_weights(path) if checkpoint is None else checkpoint
        own = self.encoder.state_dict(prefix="encoder.")
        update, report = match_resenc_encoder(own, blob, path, in_proj=in_proj_keys(self), image_channels=1)
        self.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in update.items()}, strict=True)
        return report


@register_network("plain_unet", task="segmentation", encoder="encoder", settings=PlainUNetSettings)
def plain_unet(*, img_size, in_channels: int, out_channels: int, features: int = 4) -> PlainUNet:
    return PlainUNet(in_channels, 3, [features, 2 * features, 4 * features], nn.Conv3d, 3, [1, 2, 2], 2,
                     out_channels, 1, conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                     nonlin=nn.LeakyReLU, deep_supervision=False)
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
    monkeypatch.setitem(registry.RECORDS, "plain_unet", None)  # restored (removed) after the test
    monkeypatch.delitem(registry.RECORDS, "plain_unet")
    monkeypatch.delitem(__import__("sys").modules, "plain_unet_plugin", raising=False)


def test_the_input_size_is_declared_by_the_spec_asa_built_it_from(installed):
    net = build_network({"arch": "plain_unet", "kwargs": {"img_size": (16,) * 3, "in_channels": 1, "out_channels": 2}})
    assert not hasattr(net, "img_size") and input_size(net) == (16, 16, 16)
    assert registry.ENCODER_MODULES["plain_unet"] == "encoder" and net.keys_to_in_proj  # declared by the package
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

    # its own checkpoint starts another network's encoder: every encoder tensor taken (the decoder fresh)
    net = build_from_config({"arch": "plain_unet", "features": 2, "pretrained": str(first / "checkpoints" / "last.pt")},
                            {}, in_channels=1, out_channels=4, crop=16)
    assert input_size(net) == (16, 16, 16)
    saved = {k.removeprefix("encoder."): v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    assert saved and all(torch.equal(v, saved[k]) for k, v in net.encoder.state_dict().items())
