"""A pretraining method added from outside the package, with no edit under asa/: a denoising
autoencoder on the shared SW-ViT encoder, pretrained and exported through asa-pretrain and the API,
and its export fine-tuned (segmentation and a case head) and probed like asa's own."""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch import nn

from asa.api import compose_config, finetune, load_config, pretrain, probe
from asa.cli.pretrain import main as asa_pretrain
from asa.io import load_checkpoint
from asa.methods import METHODS, MethodSettings, PretrainingMethod, register_method
from asa.data import write_demo_dataset
from asa.api.machinery.networks import build_from_config
from asa.models import PRESETS, EncoderSettings
from asa.models.swvit.encoder import SWVIT_KEYS
from asa.models.blocks.patch import patchify
from asa.models.registry import RECORDS, register_network
from asa.models.zoo import build_network


ENCODER_FIELDS = {f.name for f in fields(EncoderSettings)}  # of the model group: the encoder's settings


class DenoisingAutoencoder(nn.Module):
    """The encoder of an ASA network of the ``model`` group's sizes, and a linear head that predicts
    each clean patch from the tokens of the noisy volume. Its spec records the encoder's settings flat
    (`EncoderSettings.spec`), which is what lets its files initialise the fine-tuning networks."""

    key_to_encoder, key_to_stem, keys_to_in_proj = SWVIT_KEYS  # the export keeps the encoder, not the head

    def __init__(self, img_size: int, in_channels: int, noise: float, **encoder) -> None:
        super().__init__()
        settings = EncoderSettings.of("DenoisingAutoencoder", {**encoder, "img_size": img_size,
                                                               "in_channels": in_channels})
        self.network_kwargs = {**settings.spec(), "noise": noise}
        self.encoder = settings.encoder()
        self.patch_size, self.noise = encoder["patch_size"], noise
        self.head = nn.Linear(encoder["embed_dim"], self.patch_size ** 3 * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.encode(x + self.noise * torch.randn_like(x))
        return (self.head(tokens) - patchify(x, self.patch_size)).square().mean()


@dataclass
class DenoiseSettings(MethodSettings):
    name: str = "toy_denoise"
    noise: float = 0.5


class Denoise(PretrainingMethod):
    name, Settings, uses_model_group = "toy_denoise", DenoiseSettings, True

    def build_network(self) -> nn.Module:
        kwargs = dict(img_size=self.context.crop, in_channels=len(self.context.channels), noise=self.settings.noise,
                      **{k: v for k, v in self.context.model.items() if k in ENCODER_FIELDS})
        return build_network({"arch": "toy_denoise", "kwargs": kwargs})

    def step_of(self, cases, root):
        return lambda model, batch: (model(batch["image"]), {})


@pytest.fixture
def toy():
    # a network on the SW-ViT's encoder: of its family, whose encoder face the probes read
    register_network("toy_denoise", kind="pretraining", family="swvit")(DenoisingAutoencoder)
    register_method(Denoise)
    yield
    METHODS.pop("toy_denoise")
    RECORDS.pop("toy_denoise")


def _overrides(out, cache, *extra):
    return ["data=demo", "model=tiny", "trainer=smoke", f"output_dir={out}", "data.crop=32", "data.demo.size=40",
            "data.demo.cases=6", f"data.demo.cache_dir={cache}", "device=cpu", "method=toy_denoise", *extra]


def _check_run(out, noise: float) -> None:
    ckpts = out / "checkpoints"
    last, export = load_checkpoint(ckpts / "last.pt"), load_checkpoint(ckpts / "encoder.pt")
    assert last["network"]["arch"] == export["network"]["arch"] == "toy_denoise"
    rebuilt = build_network(last["network"])  # the checkpoint rebuilds its network from itself
    rebuilt.load_state_dict(last["model"])
    assert rebuilt.noise == noise
    best = load_checkpoint(ckpts / "best.pt")["model"]
    assert set(export["encoder"]) == {k for k in best if k.startswith("encoder.")}  # the head is not exported
    assert all(torch.equal(export["encoder"][k], best[k]) for k in export["encoder"])
    recorded = OmegaConf.load(out / "config.yaml")
    assert recorded.method == {"name": "toy_denoise", "noise": noise} and recorded.model.embed_dim == 48


def test_a_method_registered_from_the_tests_pretrains_and_exports_through_the_api(tmp_path, toy):
    cfg = load_config("pretrain", *_overrides(tmp_path / "run", tmp_path / "cache", "method.noise=0.25"))
    assert isinstance(cfg.method, DenoiseSettings) and cfg.method.noise == 0.25
    result = pretrain(cfg)
    assert result.step == 2 and result.nonfinite_steps == 0 and result.best_metric > 0
    _check_run(tmp_path / "run", 0.25)


@pytest.mark.slow
def test_a_method_registered_from_the_tests_runs_under_asa_pretrain(tmp_path, toy, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["asa-pretrain", *_overrides(tmp_path / "run", tmp_path / "cache")])
    code = 0
    try:
        asa_pretrain()
    except SystemExit as stop:
        code = stop.code
    finally:
        GlobalHydra.instance().clear()
    assert code in (0, None)
    _check_run(tmp_path / "run", 0.5)


@pytest.mark.slow
def test_the_export_of_a_method_registered_from_the_tests_fine_tunes_and_probes(tmp_path, toy):
    """Nothing in asa names the toy network: fine-tuning and the probes read its file as any SW-ViT's."""
    pretrain(load_config("pretrain", *_overrides(tmp_path / "run", tmp_path / "cache")))
    export = tmp_path / "run" / "checkpoints" / "encoder.pt"
    encoder = load_checkpoint(export)["encoder"]
    ibsr = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=40, seed=1)
    seg = load_config("finetune", "data=ibsr", "trainer=smoke", "model=tiny", f"model.pretrained={export}",
                      f"output_dir={tmp_path / 'seg'}", "device=cpu", "data.num_workers=0")
    seg.data.root = str(ibsr)
    assert finetune(seg).step >= 1
    tuned = load_checkpoint(tmp_path / "seg" / "checkpoints" / "last.pt")
    assert tuned["network"]["arch"] == "swvit_unetr" and tuned["config"]["data"]["crop"] == 32  # the export's crop
    bids = write_demo_dataset("bids", tmp_path / "bids", cases=8, size=40, seed=2, targets=True)
    case = load_config("finetune", "data=targets", "trainer=smoke", "model=tiny", f"model.pretrained={export}",
                       f"output_dir={tmp_path / 'case'}", "device=cpu", "data.num_workers=0", "task=case", "task.target=age")
    case.data.root = str(bids)
    assert finetune(case).step >= 1
    assert load_checkpoint(tmp_path / "case" / "checkpoints" / "last.pt")["network"]["arch"] == "case_head"
    record = probe(compose_config("probe", [f"encoders=[{export}]", "data=targets", f"data.root={bids}",
                                            "task=case", "task.target=age", f"output={tmp_path / 'probe'}", "device=cpu",
                                            "folds=2", "bootstrap=20", "knn_k=2",
                                            # the same demo subject ids as the pretraining cohort: said and accepted
                                            "data.accept_pretraining_overlap=true"]))
    assert record["rows"][0]["arch"] == "toy_denoise" and record["rows"][0]["n"] == 8
    sizes = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder_")}
    net = build_from_config({"pretrained": str(export), **sizes}, {}, in_channels=1, out_channels=2, crop=None)
    state = net.state_dict()  # the segmenter's encoder is the toy's, weight for weight
    assert all(torch.equal(state[k], v) for k, v in encoder.items())
