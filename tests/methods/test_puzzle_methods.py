"""method=rpl and method=jigsaw: their presets, their checks, the pretext loss falling on phantoms, and the
encoder they export fine-tuning and predicting like ASA's."""
from __future__ import annotations

import pytest
import torch

from asa.api import finetune, load_config, predict, pretrain
from asa.api.machinery.pretraining import _method
from asa.data import write_demo_dataset
from asa.data.synthetic.phantom import make_phantom
from asa.io import load_checkpoint
from asa.methods import JigsawSettings, RelativePatchLocationSettings
from asa.api.machinery.networks import build_from_config
from asa.models import PRESETS, ASASegmenter, load_encoder
from asa.models.heads.puzzles import min_hamming


@pytest.mark.parametrize("experiment, settings, arch", [("rpl", RelativePatchLocationSettings, "rpl_pretrain"),
                                                        ("jigsaw", JigsawSettings, "jigsaw_pretrain")])
def test_the_presets_select_the_method_on_the_model_groups_encoder(experiment, settings, arch):
    cfg = load_config("pretrain", f"experiment={experiment}")
    assert isinstance(cfg.method, settings) and cfg.method.name == experiment
    net = _method(cfg).build_network()
    assert net.network_arch == arch
    kwargs = net.network_kwargs
    assert (kwargs["img_size"], kwargs["embed_dim"], kwargs["depth"]) == ([64] * 3, 48, 4)  # demo crop, model=tiny
    assert "decoder_dim" not in kwargs
    assert net.layout.block == 16 and net.layout.cell == 21  # 3 cells of 21 voxels, blocks of 2 patches
    if experiment == "jigsaw":
        assert net.permutations.shape == (100, 27) and min_hamming(net.permutations) == 24


@pytest.mark.parametrize("overrides, match", [
    (["experiment=rpl", "data.crop=32"], "data.crop=32"),
    (["experiment=jigsaw", "method.grid=6"], "data.crop=64"),
    (["experiment=rpl", "method.block=3"], "method.block=3"),
    (["experiment=rpl", "model.saca=encoder"], "model.saca=encoder"),
    (["experiment=jigsaw", "model.region_attention=alternate"], "model.region_attention=alternate"),
])
def test_settings_the_puzzles_cannot_train_with_are_refused_naming_the_option(overrides, match):
    with pytest.raises(ValueError, match=match):
        _method(load_config("pretrain", *overrides))


def _phantom_crops(n: int, size: int) -> torch.Tensor:
    volumes = [torch.from_numpy(make_phantom(size, seed=s).images["t1"]).float() for s in range(n)]
    return torch.stack([(v - v.mean()) / v.std() for v in volumes])[:, None]  # [n, 1, size³]


@pytest.mark.parametrize("experiment, extra", [("rpl", ["method.pairs=8"]), ("jigsaw", [])])
@pytest.mark.slow
def test_the_pretext_loss_falls_on_phantoms(experiment, extra):
    x = _phantom_crops(8, 48)
    torch.manual_seed(0)
    net = _method(load_config("pretrain", f"experiment={experiment}", "model=tiny", "data.crop=48", *extra)
                  ).build_network()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        out = net(x[torch.randperm(8)[:4]])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("experiment, extra", [("rpl", ["method.jitter=2"]), ("jigsaw", ["method.grid=2"])])
@pytest.mark.slow
def test_the_exported_encoder_fine_tunes_and_predicts_like_asas(tmp_path, experiment, extra):
    pre = load_config("pretrain", f"experiment={experiment}", "model=tiny", "trainer=smoke", "data.crop=32",
                      "data.demo.size=40", "data.demo.cases=6", f"data.demo.cache_dir={tmp_path / 'cache'}",
                      "probe.cases=2", "device=cpu", f"output_dir={tmp_path / 'pre'}", *extra)
    result = pretrain(pre)
    assert result.step == 2 and result.nonfinite_steps == 0
    assert {"probe/r2_mean", "probe/knn_acc"} <= set(result.history[-1])  # probes ran during pretraining
    ckpts = tmp_path / "pre" / "checkpoints"
    export, best = load_checkpoint(ckpts / "encoder.pt"), load_checkpoint(ckpts / "best.pt")
    assert export["network"]["arch"] == f"{experiment}_pretrain" and (ckpts / "encoder.safetensors").is_file()
    assert set(export["encoder"]) == {k for k in best["model"] if k.startswith("encoder.")}  # no head exported

    # the export initialises the segmenter's encoder, key for key, at the pretraining grid
    sizes = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}  # model=tiny's encoder
    seg = build_from_config({"pretrained": str(ckpts / "encoder.safetensors"), **sizes}, {}, in_channels=1,
                            out_channels=4, crop=None)
    assert isinstance(seg, ASASegmenter) and seg.img_size == (32, 32, 32)
    weights = seg.encoder.state_dict()
    assert all(torch.equal(weights[k.removeprefix("encoder.")], v) for k, v in export["encoder"].items())
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.equal(load_encoder(ckpts / "encoder.pt")(x), seg.encoder.eval().encode(x))

    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=40, seed=1)
    ft = load_config("finetune", "data=ibsr", "model=tiny", "trainer=smoke", f"output_dir={tmp_path / 'ft'}",
                     "trainer.epochs=2", "device=cpu", f"data.root={root}", "data.num_workers=0",
                     f"model.pretrained={ckpts / 'encoder.pt'}")  # one step per epoch on the two training cases
    assert finetune(ft).step == 2
    assert load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["config"]["data"]["crop"] == 32
    pr = load_config("predict", f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'last.pt'}", f"input={root}",
                     f"output={tmp_path / 'pred'}", "device=cpu")
    assert len(predict(pr)) == 4
