"""Primus both ways with nnU-Net and nnssl: asa-export of a Primus pretrained by asa-pretrain writes nnU-Net v2's
``-pretrained_weights`` file and plans block, which nnU-Net's own builder and loader take, and nnssl's checkpoint with
its adaptation plan, loaded here by the rules of nnU-Net's nnssl route for Primus (restated: nnU-Net 2.8.1 lacks
it)."""

from __future__ import annotations

import json

import pytest
import torch

import asa
from asa.api import load_config, pretrain
from asa.api.export import NNUNET_PLANS, NNUNET_WEIGHTS, export_model
from asa.api.machinery.networks import build_from_config
from asa.io import load_checkpoint, save_checkpoint
from asa.io.hub import NNSSL_CHECKPOINT, NNSSL_PLAN
from asa.models import build_network, load_weights, network_spec
from asa.models.exports.nnunet import NNUNET_CONFIGURATION, nnunet_fault
from asa.models.primus.network import dna_class

try:
    PRIMUS = dna_class("Primus")
except ImportError:  # timm does not import
    PRIMUS = None
pytestmark = pytest.mark.skipif(PRIMUS is None, reason="dynamic-network-architectures' Primus does not import")
CROP = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """asa-pretrain model=primus method=asa (tiny, two steps), then asa-export of its encoder."""
    root = tmp_path_factory.mktemp("primus")
    cfg = load_config("pretrain", "data=demo", "model=primus", "model.size=tiny", "method=asa", "trainer=smoke",
                      f"output_dir={root / 'run'}", f"data.crop={CROP}", "data.demo.size=40", "data.demo.cases=4",
                      f"data.demo.cache_dir={root / 'cache'}", "device=cpu", "probe.every=0")
    assert pretrain(cfg).nonfinite_steps == 0
    encoder = root / "run" / "checkpoints" / "encoder.pt"
    return export_model(encoder, root / "model"), load_checkpoint(encoder)


def test_nnunet_builds_the_plans_primus_and_loads_the_file(exported):
    """nnU-Net's get_network_from_plans builds the plans' architecture block, its load_pretrained_weights (every
    tensor but .seg_layers. there, with its shape) fills it, and every encoder tensor is asa's."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    out, export = exported
    config = json.loads((out / NNUNET_PLANS).read_text())["configurations"][NNUNET_CONFIGURATION]
    block = config["architecture"]
    assert block["network_class_name"] == "dynamic_network_architectures.architectures.primus.Primus"
    assert block["_kw_requires_import"] == [] and config["patch_size"] == [CROP] * 3
    kwargs = block["arch_kwargs"]
    assert (kwargs["embed_dim"], kwargs["eva_depth"], kwargs["eva_numheads"]) == (48, 2, 2)  # the tiny size
    assert kwargs["patch_embed_size"] == [8, 8, 8] and kwargs["input_shape"] == [CROP] * 3
    with pytest.raises(TypeError, match="deep_supervision"):  # why the form passes none: Primus takes none
        get_network_from_plans(block["network_class_name"], kwargs, block["_kw_requires_import"], 1, 2,
                               deep_supervision=True)
    net = get_network_from_plans(block["network_class_name"], kwargs, block["_kw_requires_import"], 1, 2,
                                 allow_init=True, deep_supervision=None)
    assert type(net) is PRIMUS
    load_pretrained_weights(net, str(out / NNUNET_WEIGHTS))
    state = net.state_dict()
    assert export["encoder"] and all(torch.equal(state[k], v) for k, v in export["encoder"].items())
    assert "deep_supervision=None" in (out / "README.md").read_text()  # the card says what the trainer must do


def test_nnssl_file_loads_by_nnunets_primus_route(exported):
    """The nnssl folder: plan with Primus's declared keys, the PrimusX names nnU-Net's route reads, loaded as
    PretrainedTrainer_Primusx does (Primus built from the plan, key_to_encoder / key_to_stem loaded strictly)."""
    out, export = exported
    blob = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)
    plan = blob["nnssl_adaptation_plan"]
    on_disk = json.loads((out / NNSSL_PLAN).read_text())
    assert on_disk.pop("trainer_name") == blob["trainer_name"] and on_disk == json.loads(json.dumps(plan))
    assert (plan["key_to_encoder"], plan["key_to_stem"], plan["keys_to_in_proj"], plan["key_to_lpe"]) == (
        "eva", "down_projection", ["down_projection.proj"], "eva.pos_embed")
    assert plan["architecture_plans"]["arch_class_name"] == "Primus"
    assert plan["pretrain_num_input_channels"] == 1 and plan["recommended_downstream_patchsize"] == [CROP] * 3
    # nnunetv2/training/nnUNetTrainer/pretraining/thrp_primusx_finetuning.py: build_network_architecture
    kwargs = plan["architecture_plans"]["arch_kwargs"]
    net = PRIMUS(1, kwargs["embed_dim"], kwargs["patch_embed_size"], 3, kwargs["encoder_eva_depth"],
                 kwargs["encoder_eva_numheads"], [CROP] * 3, drop_path_rate=0.2,
                 scale_attn_inner=kwargs["scale_attn_inner"], init_values=kwargs["init_values"])
    weights = blob["network_weights"]
    for key in (plan["key_to_encoder"], plan["key_to_stem"]):
        part = {k[len(key) + 1:]: v for k, v in weights.items() if k.startswith(f"{key}.")}
        net.get_submodule(key).load_state_dict(part)  # strict, as the route loads them
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in export["encoder"].items())
    back = load_weights(out / NNSSL_CHECKPOINT)  # asa reads its own nnssl file back
    assert back["network"]["arch"] == "primus" and back["foreign"]["crop"] == CROP
    assert set(back["encoder"]) == set(export["encoder"])
    assert all(torch.equal(back["encoder"][k], v) for k, v in export["encoder"].items())


def test_a_primus_with_the_symmetric_code_is_refused(tmp_path):
    net = build_network({"arch": "primus_pretrain", "kwargs": {"img_size": CROP, "size": "tiny",
                                                               "pos_mode": "mirror"}})
    spec = network_spec(net)
    assert "symmetric position code (model.pos_mode=mirror)" in nnunet_fault(spec)
    path = save_checkpoint(tmp_path / "encoder.pt", {"network": spec, "encoder": {
        k: v for k, v in net.state_dict().items() if k.startswith(("eva.", "down_projection."))}, "step": 1})
    with pytest.raises(ValueError, match=r"--nnunet-channels: .* symmetric position code"):
        export_model(path, tmp_path / "out", nnunet_channels=2)

