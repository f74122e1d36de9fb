"""Weights that load anywhere: asa.load_encoder on every export format in a fresh process, the
safetensors export in asa's own loaders, and SA-Swin exports in MONAI's SwinUNETR."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

import asa
from asa.io import CheckpointError, load_checkpoint, save_checkpoint
from asa.api.machinery.networks import build_from_config
from asa.formats.monai import export_for_monai
from asa.models import ASA, PRESETS, ASASegmenter, SASwin, SymmetryAwareHead, VolumeEncoder, build_network, network_spec
from asa.train.pretrain import export_encoder

REPO = Path(__file__).resolve().parents[2]
SWIN_TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))
ENCODER_SIZES = {k: PRESETS["tiny"][k] for k in ("embed_dim", "depth", "num_heads", "window_size")}
FORMATS = ("encoder.safetensors", "encoder.pt", "last.pt")


def _pretrain_files(folder: Path, net: torch.nn.Module, prefixes: tuple[str, ...]) -> Path:
    """A pretraining checkpoint of ``net`` (as the engine writes it) and its encoder exports."""
    folder.mkdir()
    save_checkpoint(folder / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 5,
                                         "config": {"not": "needed"}})
    export_encoder(folder / "last.pt", folder / "encoder.pt", prefixes)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(1)
    mae = ASA(img_size=32, **PRESETS["tiny"]).eval()
    head = SymmetryAwareHead(**SWIN_TINY).eval()
    return {"asa": (mae, _pretrain_files(root / "asa", mae, ("encoder.",))),
            "sa_swin": (head, _pretrain_files(root / "sa_swin", head, ("swinViT.",)))}


def _original_outputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        if isinstance(net, ASA):
            return [net.encoder.encode(x)]
        return list(net.swinViT(x))  # normalize=True, as SwinUNETR and SA-Swin run it


FRESH_PROCESS = r"""
import sys
import torch
import asa

torch.set_num_threads(int(sys.argv[1]))
x = torch.load("input.pt", weights_only=True)
out = {}
for name in sys.argv[2:]:
    encoder = asa.load_encoder(name)
    assert not encoder.training, name
    with torch.no_grad():
        y = encoder(x)
    for i, t in enumerate(y if isinstance(y, (list, tuple)) else [y]):
        out[f"{name}:{i}"] = t
    out[f"{name}:class"] = type(encoder).__module__ + "." + type(encoder).__name__
loaded = [m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf")]
assert not loaded, f"load_encoder imported the config machinery: {loaded}"
torch.save(out, "outputs.pt")
"""


@pytest.mark.slow  # a fresh interpreter imports torch and MONAI (about 10 s on a loaded CPU)
def test_each_format_loads_in_a_fresh_process_bit_for_bit(pretrained, tmp_path):
    x = torch.randn(2, 1, 32, 32, 32)
    torch.save(x, tmp_path / "input.pt")
    for family in pretrained:  # only the files: no run config, no Hydra, a working folder of their own
        (tmp_path / family).symlink_to(pretrained[family][1], target_is_directory=True)
    names = [f"{family}/{fmt}" for family in pretrained for fmt in FORMATS]
    threads = torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(threads), *names], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "outputs.pt", weights_only=True)
    expected_class = {"asa": "asa.models.swvit.volume.VolumeEncoder",
                      "sa_swin": "monai.networks.nets.swin_unetr.SwinTransformer"}
    for family, (net, _) in pretrained.items():
        original = _original_outputs(net, x)
        for fmt in FORMATS:
            name = f"{family}/{fmt}"
            assert out[f"{name}:class"] == expected_class[family]
            got = [out[f"{name}:{i}"] for i in range(len(original))]
            assert f"{name}:{len(original)}" not in out
            assert all(torch.equal(a, b) for a, b in zip(got, original)), name  # bit for bit


def test_safetensors_export_matches_the_pt_export(pretrained):
    for net, folder in pretrained.values():
        pt = load_checkpoint(folder / "encoder.pt")
        tensors = load_file(folder / "encoder.safetensors")  # safetensors alone, no pickle
        assert tensors.keys() == pt["encoder"].keys() and all(torch.equal(tensors[k], pt["encoder"][k]) for k in tensors)
        back = asa.models.load_weights(folder / "encoder.safetensors")
        assert back["network"] == pt["network"] == network_spec(net)
        assert (back["source"], back["step"]) == ("last.pt", 5)


def test_volume_encoder_returns_tokens_hidden_states_and_feature_maps(pretrained):
    mae, folder = pretrained["asa"]
    encoder = asa.load_encoder(folder / "encoder.safetensors")
    assert isinstance(encoder, VolumeEncoder) and encoder.grid == (4, 4, 4)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        tokens, hidden = encoder(x, hidden_indices=(0, 2))
        ref_tokens, ref_hidden = mae.encoder.encode(x, hidden_indices=(0, 2))
    assert tokens.shape == (1, 64, 48) and len(hidden) == 2 and all(h.shape == (1, 64, 48) for h in hidden)
    assert torch.equal(tokens, ref_tokens) and all(torch.equal(a, b) for a, b in zip(hidden, ref_hidden))
    volume = encoder.to_volume(tokens)
    assert volume.shape == (1, 48, 4, 4, 4) and torch.equal(volume[0, :, 1, 2, 3], tokens[0, 1 * 16 + 2 * 4 + 3])
    assert encoder.state_dict().keys() == load_file(folder / "encoder.safetensors").keys()  # the export's keys
    with pytest.raises(ValueError, match=r"\[B, 1, 32, 32, 32\]"):
        encoder(torch.randn(1, 1, 64, 64, 64))


@pytest.mark.parametrize("arch, kwargs, module", [
    ("swvit_unetr", dict(img_size=[32] * 3, in_channels=2, out_channels=3, **ENCODER_SIZES), VolumeEncoder),
    ("sa_swin", dict(img_size=[32] * 3, in_channels=1, out_channels=3, **SWIN_TINY), "SwinTransformer"),
    ("swin_unetr", dict(img_size=[32] * 3, in_channels=1, out_channels=3, **SWIN_TINY), "SwinTransformer"),
])
def test_a_finetuning_checkpoint_gives_its_encoder(tmp_path, arch, kwargs, module):
    net = build_network({"arch": arch, "kwargs": kwargs})
    save_checkpoint(tmp_path / "best.pt", {"model": net.state_dict(), "network": network_spec(net)})
    encoder = asa.load_encoder(tmp_path / "best.pt")
    assert isinstance(encoder, module) if isinstance(module, type) else type(encoder).__name__ == module
    prefix = "encoder." if arch == "swvit_unetr" else "swinViT."
    own = {k: v for k, v in net.state_dict().items() if k.startswith(prefix)}
    got = encoder.state_dict() if arch == "swvit_unetr" else {prefix + k: v for k, v in encoder.state_dict().items()}
    assert got.keys() == own.keys() and all(torch.equal(got[k], own[k]) for k in own)


def test_asa_finetuning_reads_the_safetensors_export(pretrained):
    mae, folder = pretrained["asa"]
    reports, encoders = [], []
    for fmt in ("encoder.pt", "encoder.safetensors"):
        torch.manual_seed(0)
        seg = ASASegmenter(img_size=32, in_channels=2, out_channels=3, **ENCODER_SIZES)
        reports.append(seg.load_pretrained(folder / fmt, verbose=False))
        encoders.append(seg.encoder.state_dict())
    assert sorted(reports[0].loaded) == sorted(reports[1].loaded) and not reports[1].missing and reports[1].adapted
    assert all(torch.equal(encoders[0][k], encoders[1][k]) for k in encoders[0])
    assert torch.equal(encoders[1]["blocks.0.attn.qkv.weight"], mae.encoder.blocks[0].attn.qkv.weight)
    # model.pretrained=...safetensors through the config path (crop size and position code from its spec)
    net = build_from_config({"pretrained": str(folder / "encoder.safetensors"), **ENCODER_SIZES}, {},
                            in_channels=1, out_channels=2, crop=None)
    assert net.img_size == (32, 32, 32) and torch.equal(net.encoder.norm.weight, mae.encoder.norm.weight)


def test_sa_swin_finetuning_reads_the_safetensors_export(pretrained):
    head, folder = pretrained["sa_swin"]
    net = SASwin(1, 3, **SWIN_TINY)
    report = net.load_pretrained(folder / "encoder.safetensors", verbose=False)
    assert not report.missing and not report.unexpected
    own = net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in head.encoder_state_dict().items())


def test_monai_swin_unetr_takes_the_sa_swin_export(pretrained, tmp_path):
    head, folder = pretrained["sa_swin"]
    export = load_file(folder / "encoder.safetensors")
    net = SwinUNETR(in_channels=1, out_channels=2, **SWIN_TINY)  # MONAI's own network, same sizes
    result = net.load_state_dict(export, strict=False)
    swin_keys = {k for k in net.state_dict() if k.startswith("swinViT.")}
    assert result.unexpected_keys == [] and not swin_keys & set(result.missing_keys)
    assert swin_keys == export.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in export.items())

    # SwinUNETR.load_from reads the original self-supervised weights' layout ("module.*", mlp.fc1/fc2)
    out = export_for_monai(folder / "encoder.safetensors", tmp_path / "swin_unetr_ssl.pt")
    layout = torch.load(out, weights_only=True)
    assert all(k.startswith("module.") for k in layout["state_dict"])
    assert any(".mlp.fc1." in k for k in layout["state_dict"]) and not any("linear1" in k for k in layout["state_dict"])
    net = SwinUNETR(in_channels=1, out_channels=2, **SWIN_TINY)
    net.load_from(layout)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in export.items())  # every SwinViT tensor came over
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32, 32)
        assert all(torch.equal(a, b) for a, b in zip(net.swinViT(x), head.swinViT(x)))

    with pytest.raises(ValueError, match="the monai export takes the swin family"):
        export_for_monai(pretrained["asa"][1] / "encoder.safetensors", tmp_path / "x.pt")


def test_bad_files_are_named(pretrained, tmp_path):
    _, folder = pretrained["asa"]
    export = load_checkpoint(folder / "encoder.pt")
    del export["encoder"]["encoder.norm.weight"]
    save_checkpoint(tmp_path / "incomplete.pt", export)
    with pytest.raises(ValueError, match=r"(?s)do not fit.*Missing.*norm\.weight") as info:
        asa.load_encoder(tmp_path / "incomplete.pt")
    assert "incomplete.pt" in str(info.value)
    save_checkpoint(tmp_path / "nospec.pt", {"encoder": export["encoder"], "config": {}})
    with pytest.raises(ValueError, match="no network spec") as info:
        asa.load_encoder(tmp_path / "nospec.pt")
    assert "nospec.pt" in str(info.value)
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        asa.load_encoder(tmp_path / "corrupt.safetensors")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        ASASegmenter(img_size=32, **ENCODER_SIZES).load_pretrained(tmp_path / "corrupt.safetensors")


def test_a_spec_that_does_not_build_is_named_with_its_file_and_folder(pretrained, tmp_path):
    from asa.io import save_export_safetensors, write_model_folder
    from asa.io.hub import encoder_network_spec

    _, folder = pretrained["asa"]
    export = load_checkpoint(folder / "encoder.pt")
    export["network"]["kwargs"]["num_heads"] = 5  # the tensors' width is not divisible by it
    save_export_safetensors(tmp_path / "edited.safetensors", export)
    with pytest.raises(ValueError, match=r"edited.safetensors: the network spec recorded in it does not build its "
                                         r"'asa_pretrain' network \(.*num_heads"):
        asa.load_encoder(tmp_path / "edited.safetensors")
    out = write_model_folder(tmp_path / "model", export, {"asa_format": "asa.model_folder",
                                                          "network": encoder_network_spec(export["network"])}, "")
    with pytest.raises(ValueError, match=rf"model folder {out} \(model.safetensors and config.json\): the network "
                                         "spec recorded in it does not build"):
        asa.load_encoder(out)
