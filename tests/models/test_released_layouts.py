"""Published nnssl checkpoints as released, unlike the plan-complete fixture: OpenMind's ResEnc-L files name the
preset (``arch_class_name: "ResEncL"``, ``arch_kwargs: None``; nnssl ``src/nnssl/utilities/add_adaptation_plan.py``
builds ``ArchitecturePlans(arch)`` without kwargs), and nnssl's SparK3D trainers save ``…conv.*`` and
``…all_modules.0.*`` as two modules of which only ``all_modules`` is trained (``src/nnssl/architectures/
spark_utils.py``, ``convert_to_spark_cnn``)."""
from __future__ import annotations

import pytest
import torch

import asa
from asa.models import load_weights
from tests.fixtures.published import CROP, PLAN, nnssl_checkpoint


def _released_resencl(seed: int = 0) -> dict:
    blob = nnssl_checkpoint(seed)
    blob["nnssl_adaptation_plan"]["architecture_plans"] = {"arch_class_name": "ResEncL", "arch_kwargs": None,
                                                           "arch_kwargs_requiring_import": None}
    return blob


def test_resencl_preset_without_kwargs_loads_every_encoder_tensor(tmp_path, capsys):
    blob = _released_resencl()
    torch.save(blob, tmp_path / "checkpoint_final.pth")
    export = load_weights(tmp_path / "checkpoint_final.pth")
    kwargs = export["network"]["kwargs"]
    # the preset's strides (1, then 2 per stage) and one decoder conv per stage, as nnssl's get_res_enc_l
    assert kwargs["strides"] == [1] + [2] * (len(PLAN.features) - 1) and kwargs["decoder_convs"] == [1] * 3
    assert kwargs["features"] == PLAN.features and kwargs["img_size"] == [CROP] * 3
    encoder = asa.load_encoder(tmp_path / "checkpoint_final.pth")
    assert "published layout: nnssl (ResEncL)" in capsys.readouterr().out
    own = encoder.state_dict()
    assert all(torch.equal(v, blob["network_weights"]["encoder." + k]) for k, v in own.items())


def _spark(seed: int = 0) -> tuple[dict, dict]:
    """A SparK3D file: every conv's ``conv.*`` untrained (its own values), ``all_modules.0.*`` trained."""
    blob = _released_resencl(seed)
    blob["trainer_name"] = "SparkTrainer5epochs"
    trained = {}
    gen = torch.Generator().manual_seed(9)
    for key in list(blob["network_weights"]):
        if ".conv." in key and key.startswith("encoder."):
            twin = key.replace(".conv.", ".all_modules.0.", 1)
            trained[twin] = blob["network_weights"][twin].clone()
            blob["network_weights"][key] = torch.randn(blob["network_weights"][key].shape, generator=gen)
    return blob, trained


def test_spark3d_twins_resolve_to_the_trained_all_modules(tmp_path, capsys):
    blob, trained = _spark()
    torch.save(blob, tmp_path / "spark.pth")
    encoder = asa.load_encoder(tmp_path / "spark.pth")
    report = capsys.readouterr().out
    own = encoder.state_dict()
    for twin, value in trained.items():
        name = twin.removeprefix("encoder.")
        assert torch.equal(own[name], value) and torch.equal(own[name.replace(".all_modules.0.", ".conv.", 1)], value)
    assert f"{len(trained)} conv / norm tensors differed from their all_modules twin" in report
    assert "the all_modules tensors were taken" in report


def test_disagreeing_twins_outside_spark_files_are_still_refused(tmp_path):
    blob, _ = _spark()
    blob["trainer_name"] = "BaseMAETrainer"
    torch.save(blob, tmp_path / "mae.pth")
    with pytest.raises(ValueError, match="are one tensor of the network but differ in the file"):
        asa.load_encoder(tmp_path / "mae.pth")
