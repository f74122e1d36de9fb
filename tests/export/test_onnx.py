"""asa-export --format onnx: ``model.onnx`` beside the card passes onnx.checker, onnxruntime's logits match torch's
on windows, and asa-predict runs the file through asa's own sliding windows to the labels the torch checkpoint
gives (≥ 99.9 % of voxels); what the exporter cannot represent is refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from asa.api import finetune, predict  # noqa: E402
from asa.api.config import compose_config  # noqa: E402
from asa.api.export import export_model  # noqa: E402
from asa.formats.onnx import LOGIT_TOLERANCE, ONNX_FILE, OPSET  # noqa: E402
from asa.api.machinery.run import OptionError  # noqa: E402
from asa.data import write_demo_dataset  # noqa: E402
from asa.formats.onnx import OnnxNetwork, onnx_record  # noqa: E402
from asa.eval.predict import Predictor  # noqa: E402
from asa.io import load_checkpoint, load_volume  # noqa: E402
from asa.models import build_network  # noqa: E402

NETWORKS = {"resenc": ["model=resenc", "model.size=tiny"], "swvit_unetr": ["model=tiny"],
            "unetr": ["model=unetr", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=3",
                      "model.feature_size=8"],
            "dynunet": ["model=dynunet"]}  # no encoder, so no model folder: model.onnx and README.md alone


def _run(tmp_path, model: list[str]):
    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=32, seed=5)
    run = tmp_path / "run"
    finetune(compose_config("finetune", ["data=brats", f"data.root={root}", *model, "data.crop=32", "trainer=smoke",
                                         f"output_dir={run}", "device=cpu", "data.num_workers=0", "trainer.epochs=1",
                                         "trainer.amp=off"]))
    return root, run / "checkpoints" / "last.pt"


@pytest.mark.slow  # a pipeline: fine-tuning, the export and both predictions, per network
@pytest.mark.parametrize("arch", sorted(NETWORKS))
def test_onnx_matches_torch_on_windows_and_cases(tmp_path, arch, capsys):
    root, last = _run(tmp_path, NETWORKS[arch])
    folder = export_model(last, tmp_path / "model", format="onnx", license="apache-2.0")
    path = folder / ONNX_FILE
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET
    record = onnx_record(path)
    assert record["provenance"]["license"] == "apache-2.0" and record["provenance"]["task"] == "brats"
    assert record["parity"]["relative"] <= LOGIT_TOLERANCE
    assert "## ONNX" in (folder / "README.md").read_text()
    if arch == "dynunet":
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", ONNX_FILE]

    # a window batch of another size than the trace's, offsets off the reference grid included
    state = load_checkpoint(last)
    net = build_network(state["network"])
    net.load_state_dict(state["model"])
    net.eval()
    runtime = OnnxNetwork(path, threads=1)
    assert runtime.capabilities.offsets == (arch == "swvit_unetr")
    x = torch.randn(4, 4, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    offsets = torch.tensor([[0, 0, 0], [-1, 2, 1], [3, -2, 0], [1, 1, -3]]) if runtime.capabilities.offsets else None
    with torch.no_grad():
        expected = net(x, offsets) if offsets is not None else net(x)
    got = runtime(x, offsets)
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())

    by_torch = predict(compose_config("predict", [f"checkpoint={last}", f"input={root}", f"output={tmp_path / 'pt'}",
                                                  "device=cpu", "amp=off"]))
    by_onnx = predict(compose_config("predict", [f"checkpoint={path}", f"input={root}", f"output={tmp_path / 'ox'}",
                                                 "device=cpu"]))
    assert sorted(p.name for p in by_onnx) == sorted(p.name for p in by_torch)
    for a, b in zip(sorted(by_torch), sorted(by_onnx)):
        assert (load_volume(a).array == load_volume(b).array).mean() >= 0.999, a.name
    manifest = json.loads((tmp_path / "ox" / "predictions.json").read_text())
    assert manifest["runs"][-1]["checkpoint"] == str(path) and manifest["runs"][-1]["settings"]["amp"] == "fp32"
    # an amp (or a GPU) asked for is said unused: onnxruntime runs the file on the CPU in fp32
    asked = Predictor.from_checkpoint(path, device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    assert asked.amp_dtype is None and asked.device.type == "cpu"
    assert "runs in onnxruntime on the CPU in fp32: device=cpu and amp=bfloat16 are not used" in capsys.readouterr().err


@pytest.mark.slow  # a pipeline: fine-tuning and three exports
def test_onnx_refuses_before_writing(tmp_path, monkeypatch):
    _, last = _run(tmp_path, NETWORKS["resenc"])
    folder = export_model(last, tmp_path / "encoder")  # a model folder of the encoder alone
    with pytest.raises(OptionError, match="--format onnx: .* holds no fine-tuned segmenter"):
        export_model(folder / "model.safetensors", tmp_path / "no_segmenter", format="onnx")
    assert not (tmp_path / "no_segmenter").exists()
    # the model folder itself: its segmenter.pt is the network exported
    assert (export_model(folder, tmp_path / "from_folder", format="onnx") / ONNX_FILE).is_file()

    def unsupported(*args, **kwargs):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::made_up", 17, "")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(OptionError, match="'resenc' network that torch's ONNX exporter .* cannot trace: .*made_up"):
        export_model(last, tmp_path / "refused", format="onnx")
    assert not (tmp_path / "refused").exists()


def test_an_op_the_exporter_lacks_is_refused_naming_it():
    from asa.formats.onnx import export_onnx
    from asa.models.presets import PRESETS

    sizes = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
    spec = {"arch": "swvit_unetr", "kwargs": {**sizes, "img_size": 32, "in_channels": 1, "out_channels": 2,
                                              "region_attention": "alternate"}}  # its region ids: an in-place scatter
    net = build_network(spec)
    with pytest.raises(ValueError, match=r"'swvit_unetr' network that torch's ONNX exporter \(opset 17\) cannot trace: "
                                         r".*aten::scatter_"):
        export_onnx({"model": net.state_dict(), "network": spec, "config": {}}, provenance={}, source="run")
