"""Primus both ways with nnU-Net and nnssl: asa-export of a Primus pretrained by asa-pretrain writes nnU-Net v2's
``-pretrained_weights`` file and plans block, which nnU-Net's own builder and loader take, and nnssl's checkpoint with
its adaptation plan, loaded here by the rules of nnU-Net's nnssl route for Primus (restated: nnU-Net 2.8.1 lacks
it); a file nnssl writes of its own Primus presets is read by asa with every encoder tensor equal."""

from __future__ import annotations

import json

import pytest
import torch

import asa
from asa.api import load_config, pretrain
from asa.api.export import export_model
from asa.formats.nnunet import NNUNET_PLANS, NNUNET_WEIGHTS
from asa.api.machinery.networks import build_from_config
from asa.io import load_checkpoint, save_checkpoint
from asa.io.hub import NNSSL_CHECKPOINT, NNSSL_PLAN
from asa.models import build_network, load_weights, network_spec
from asa.formats.nnunet import NNUNET_CONFIGURATION, nnunet_fault
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
    pytest.importorskip("nnunetv2")  # the nnunet extra
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


# --- a Primus file nnssl writes ------------------------------------------------------------------------------------

def _nnssl_primus(patch: int = CROP, recommended: int = 48) -> dict:
    """checkpoint_final.pth of nnssl's Primus (BaseEvaMAETrainer's adaptation plan: the preset ``PrimusS`` without
    arch_kwargs, keys eva / down_projection / eva.pos_embed), the network as nnssl's get_network_by_name builds the
    preset: dynamic-network-architectures' PrimusS at patch 8³ on the pretraining patch."""
    from dynamic_network_architectures.architectures.primus import PrimusS

    torch.manual_seed(0)
    net = PrimusS(input_channels=1, output_channels=1, input_shape=(patch,) * 3, patch_embed_size=(8, 8, 8))
    for p in net.parameters():  # distinct values everywhere (the layer scale starts at 0.1)
        p.data.normal_()
    config = {"data_identifier": "nnsslPlans_onemmiso", "preprocessor_name": "DefaultPreprocessor",
              "spacing_style": "onemmiso", "normalization_schemes": ["ZScoreNormalization"],
              "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_data_kwargs": {}, "resampling_fn_mask": "resample_data_or_seg_to_shape",
              "resampling_fn_mask_kwargs": {}, "spacing": [1.0, 1.0, 1.0], "patch_size": [patch] * 3}
    plan = {"architecture_plans": {"arch_class_name": "PrimusS", "arch_kwargs": None,
                                   "arch_kwargs_requiring_import": []},
            "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                              "original_median_spacing_after_transp": [1, 1, 1],
                              "image_reader_writer": "NibabelReaderWriter", "transpose_forward": [0, 1, 2],
                              "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
                              "configurations": {"onemmiso": config}},
            "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": [recommended] * 3,
            "key_to_encoder": "eva", "key_to_stem": "down_projection", "keys_to_in_proj": ["down_projection.proj"],
            "key_to_lpe": "eva.pos_embed"}
    return {"network_weights": net.state_dict(), "nnssl_adaptation_plan": plan, "trainer_name": "BaseEvaMAETrainer",
            "current_epoch": 1000}


def test_an_nnssl_primus_file_loads_every_encoder_tensor(tmp_path, capsys):
    path = tmp_path / "checkpoint_final.pth"
    blob = _nnssl_primus()
    torch.save(blob, path)
    weights = blob["network_weights"]
    own = {k: v for k, v in weights.items() if k.startswith(("eva.", "down_projection."))}
    assert any(".gamma_1" in k for k in own) and any(".norm." in k for k in own)  # layer scale, inner attention norm
    encoder = asa.load_encoder(path)  # the patch embedding and EVA, as the family's face gives them
    assert "published layout: nnssl (PrimusS)" in capsys.readouterr().out
    state = encoder.net.state_dict()
    assert [k for k in own if not torch.equal(state[k], own[k])] == []
    # asa-finetune's road: the crop is the file's input_shape (its learned position code's grid), not the
    # recommended 48, and the topology the preset's whatever model.size says
    net = build_from_config({"arch": "primus", "pretrained": str(path)}, {}, in_channels=1, out_channels=2, crop=None)
    assert net.img_size == (CROP,) * 3 and net.embed_dim == 396
    assert [k for k in own if not torch.equal(net.state_dict()[k], own[k])] == []
    assert net(torch.randn(1, 1, CROP, CROP, CROP)).shape == (1, 2, CROP, CROP, CROP)
    with pytest.raises(ValueError, match=r"(?s)shape mismatch loading .*eva\.pos_embed"):  # the recommended 48
        build_from_config({"arch": "primus", "pretrained": str(path)}, {}, in_channels=1, out_channels=2, crop=48)


def test_an_nnssl_primus_file_of_other_keys_or_without_its_patch_is_refused(tmp_path):
    blob = _nnssl_primus()
    blob["nnssl_adaptation_plan"]["key_to_encoder"] = "encoder.eva"  # nnssl's contrastive trainers wrap Primus
    torch.save(blob, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"key_to_encoder='encoder.eva', expected 'eva'"):
        asa.load_encoder(tmp_path / "wrapped.pth")
    blob = _nnssl_primus()
    del blob["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"]
    torch.save(blob, tmp_path / "nopatch.pth")
    with pytest.raises(ValueError, match=r"a Primus plan \(PrimusS\) without arch_kwargs and without the pretraining"):
        asa.load_encoder(tmp_path / "nopatch.pth")
