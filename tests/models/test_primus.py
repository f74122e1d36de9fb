"""Primus (dynamic-network-architectures' own class) as an asa family from one folder (asa/models/primus/): the
segmenter is Primus key for key, its masked twin masks tokens at the patch grid and keeps the twin's contract, and
``model=primus`` pretrains (``method=mae|asa``), exports its encoder under the keys Primus declares, is probed and
fine-tunes."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from asa.api import finetune, load_config, pretrain
from asa.api.machinery.networks import build_from_config
from asa.data import write_demo_dataset
from asa.eval.frozen import load_frozen
from asa.io import load_checkpoint
from asa.methods import get_method
from asa.methods.base import MethodContext
from asa.methods.masked_autoencoder import mae_step
from asa.models import build_network, encoder_keys, families
from asa.models.portable import encoder_export
from asa.models.primus.network import DEFAULT_SIZE, PRIMUS_SIZES, dna_class
from asa.models.twin import twin_fault
from asa.train.updates import encoder_names
from asa.study.runs import Scale, parse_network


def _primus_importable() -> bool:
    try:
        dna_class("Primus")
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _primus_importable(), reason="dynamic-network-architectures' Primus (timm) "
                                                                  "does not import")
TINY = {"size": "tiny", "patch_size": 8}


def _twin(**kwargs):
    return build_network({"arch": "primus_pretrain", "kwargs": {"img_size": 32, "in_channels": 1, **TINY, **kwargs}})


def test_the_sizes_are_dynamic_network_architectures_own():
    dna_class("Primus")  # imports dynamic-network-architectures' Primus (timm, torchvision)
    from dynamic_network_architectures.architectures.primus import _PRIMUS_CONFIGS
    assert {name: dims for name, dims in PRIMUS_SIZES.items() if name != "tiny"} == _PRIMUS_CONFIGS
    assert DEFAULT_SIZE in _PRIMUS_CONFIGS


def test_the_segmenter_is_primus_key_for_key():
    from dynamic_network_architectures.architectures.primus import Primus
    net = build_network({"arch": "primus", "kwargs": {"img_size": 32, "in_channels": 2, "out_channels": 3, **TINY}})
    own = Primus(2, 48, (8, 8, 8), 3, eva_depth=2, eva_numheads=2, input_shape=(32, 32, 32))
    assert list(own.state_dict()) == list(net.state_dict())
    own.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 2, 32, 32, 32)
    assert torch.allclose(own.eval()(x), net.eval()(x), atol=1e-5)
    keys = encoder_keys(net)  # read off Primus's own declaration
    assert keys.prefixes == ("eva.", "down_projection.") and keys.in_proj_weights == ("down_projection.proj.weight",)
    assert families()["primus"].nnunet.keys == keys  # the family's, for published files read before a network is built
    # the encoder's learning rate and relative update take the stem with EVA
    assert encoder_names(net) == {n for n, _ in net.named_parameters() if n.startswith(("eva.", "down_projection."))}


def test_the_twin_keeps_the_contract_and_masks_tokens_at_the_patch_grid():
    twin = _twin(mask_ratio=0.75, loss_weighting="uniform")
    assert twin_fault(type(twin)) is None
    out = twin(torch.randn(2, 1, 32, 32, 32))
    assert out.pred.shape == (2, 64, 512) and out.mask.shape == out.weights.shape == (2, 64)
    assert out.mask.sum(1).tolist() == [48, 48]  # exactly round(0.75 · 4³) tokens per sample
    assert torch.all(out.weights[out.mask == 0] == 0) and torch.allclose(out.weights[out.mask == 1],
                                                                         out.weights[out.mask == 1][0])
    out.loss.backward()
    assert twin.down_projection.proj.weight.grad.abs().sum() > 0  # the loss reaches the stem


def test_the_encoder_never_sees_a_masked_patch():
    """The visible tokens' encodings do not change when the masked patches' voxels do."""
    twin = _twin().eval()
    x = torch.randn(1, 1, 32, 32, 32)
    mask, keep = twin.random_masking(1, x.device)
    hidden = twin.unpatchify(mask[..., None].expand(-1, -1, 512))  # [1, 1, 32, 32, 32], 1 in a masked patch
    changed = x + 5 * torch.randn_like(x) * hidden
    assert torch.allclose(twin.encode(twin.embed(x), keep), twin.encode(twin.embed(changed), keep), atol=1e-5)


def test_the_attentive_weight_is_at_the_token_patch_and_the_symmetric_code_mirrors():
    attentive = _twin(loss_weighting="attentive", pos_mode="mirror")
    out = attentive(torch.randn(2, 1, 32, 32, 32))
    masked = out.weights[out.mask == 1]
    assert masked.std() > 0 and torch.all(out.weights[out.mask == 0] == 0)
    code = attentive.symmetric_code[0].view(4, 4, 4, -1)  # [g0, g1, g2, E], lr_axis 0
    assert torch.equal(code, code.flip(0)) and not torch.equal(code, code.flip(1))
    with pytest.raises(ValueError, match=r"^loss_weighting=focal_region: model=primus takes uniform or attentive"):
        _twin(loss_weighting="focal_region")


def _method(*overrides):
    cfg = load_config("pretrain", "model=primus", "model.size=tiny", *overrides)
    return get_method(cfg.method.name)(cfg.method, MethodContext(crop=32, channels=("t1",), batch_size=2,
                                                                 model=asdict(cfg.model)))


@pytest.mark.parametrize("method, weighting", [("mae", "uniform"), ("asa", "attentive")])
def test_method_mae_and_asa_pretrain_primus(method, weighting):
    m = _method(f"method={method}")
    m.check()
    net = m.build_network()
    assert net.network_arch == "primus_pretrain" and net.loss_weighting == weighting
    loss, logs = mae_step(net, {"image": torch.randn(2, 1, 32, 32, 32)})
    assert torch.isfinite(loss) and 0 < logs["weights/effective_share"] <= 1
    assert encoder_keys(net).prefixes == ("eva.", "down_projection.")  # the export keeps what Primus declares


def test_the_study_reads_primus_off_the_registry():
    """asa-study --network primus-tiny: the arms the twin takes, composed as asa-pretrain reads them."""
    network = parse_network("primus-tiny", Scale.__new__(Scale))
    assert network.finetune == ["model=primus", "model.size=tiny"]
    assert network.missing("asa") == network.missing("mae") == [] and network.missing("asa-coord") == ["coord_channel"]
    cfg = load_config("pretrain", *network.pretrain("asa"))
    assert cfg.model.arch == "primus" and cfg.model.size == "tiny" and cfg.method.loss_weighting == "attentive"
    from asa.study.study import build_parser
    assert "primus[-tiny|-S|-B|-M|-L]" in " ".join(build_parser().format_help().split())  # --help reads the registry


def test_model_primus_pretrains_exports_and_fine_tunes(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("pretrain", "data=demo", "model=primus", "model.size=tiny", "method=asa", "trainer=smoke",
                      f"output_dir={run}", "data.crop=32", "data.demo.size=40", "data.demo.cases=4",
                      f"data.demo.cache_dir={tmp_path / 'cache'}", "device=cpu")
    result = pretrain(cfg)  # with the end-of-run probe: Primus's tokens through the family's face
    assert result.nonfinite_steps == 0
    probed = result.history[-1]
    assert -1 <= probed["probe/r2_mean"] <= 1 and 0 <= probed["probe/knn_acc"] <= 1
    export = load_checkpoint(run / "checkpoints" / "encoder.pt")
    assert export["network"]["arch"] == "primus_pretrain"
    assert {k.split(".", 1)[0] for k in export["encoder"]} == {"eva", "down_projection"}  # no decoder, no head
    net = build_from_config({"arch": "primus", "size": "tiny", "pretrained": str(run / "checkpoints" / "encoder.pt")},
                            {}, in_channels=1, out_channels=4, crop=None)
    assert net.img_size == (32, 32, 32)  # the file's crop
    assert all(torch.equal(net.state_dict()[k], v) for k, v in export["encoder"].items())
    with pytest.raises(ValueError, match=r"pretrained with pos_mode=none; set model.pos_mode=none"):
        build_from_config({"arch": "primus", "size": "tiny", "pos_mode": "mirror",
                           "pretrained": str(run / "checkpoints" / "encoder.pt")}, {}, in_channels=1,
                          out_channels=4, crop=None)
    # the probes' encoder: the patch embedding and EVA of the export, tokens at the patch grid
    frozen = load_frozen(run / "checkpoints" / "encoder.pt")
    assert (frozen.size, frozen.stride, frozen.in_channels) == ((32, 32, 32), 8, 1)
    assert all(torch.equal(frozen.module.net.state_dict()[k], v) for k, v in export["encoder"].items())
    assert frozen.face.tokens(frozen.module, torch.randn(1, 1, 32, 32, 32)).shape == (1, 64, 48)
    assert set(encoder_export(run / "checkpoints" / "last.pt")["encoder"]) == set(export["encoder"])
    ibsr = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=40, seed=1)
    seg = load_config("finetune", "data=ibsr", "trainer=smoke", "model=primus", "model.size=tiny",
                      f"model.pretrained={run / 'checkpoints' / 'encoder.pt'}", f"output_dir={tmp_path / 'seg'}",
                      "device=cpu", "data.num_workers=0")
    seg.data.root = str(ibsr)
    assert finetune(seg).step >= 1
    tuned = load_checkpoint(tmp_path / "seg" / "checkpoints" / "last.pt")
    assert tuned["network"]["arch"] == "primus" and tuned["config"]["data"]["crop"] == 32  # the export's crop
    with pytest.raises(ValueError, match=r"(?s)shape mismatch loading .*eva.pos_embed"):  # another crop: refused
        build_from_config({"arch": "primus", "size": "tiny", "pretrained": str(run / "checkpoints" / "encoder.pt")},
                          {}, in_channels=1, out_channels=4, crop=48)


def test_torchvision_imports_with_its_missing_ops_skipped_and_the_registration_restored():
    import importlib

    from asa.models.torchvision_ops import import_torchvision
    real = torch.library.register_fake
    import_torchvision()
    assert torch.library.register_fake is real
    assert importlib.import_module("timm.layers") is not None  # timm imports torchvision
