"""asa-probe end to end on demo phantoms (tiny encoders, 32^3 crops): a trained and a random-init row with
intervals in every output, several checkpoints in one table, voxel labels, SA-Swin exports, refusals."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

from asa.api import compose_config, probe
from asa.api.machinery.run import OptionError
from asa.api.machinery.rundir import RunDirError
from asa.data import write_demo_dataset
from asa.io import save_export_safetensors
from tests.fixtures.runs import encoder_checkpoint, probe_overrides


@pytest.fixture(scope="module")
def aged(tmp_path_factory):
    root = tmp_path_factory.mktemp("aged")
    return write_demo_dataset("bids", root / "bids", cases=10, size=32, seed=0, targets=True)


@pytest.mark.slow
def test_probe_prints_a_pretrained_and_a_random_row_with_intervals(tmp_path, aged, capsys):
    a = encoder_checkpoint(tmp_path / "a.pt", 1)
    b = encoder_checkpoint(tmp_path / "b.pt", 2)
    out = tmp_path / "out"
    result = probe(compose_config("probe", probe_overrides(aged, out, a, b, "random", extra=["task=case", "task.target=age"])))
    printed = capsys.readouterr().out
    assert [r["name"] for r in result["rows"]] == [str(a), str(b), "random-init (asa_pretrain)"]
    assert "| random-init (asa_pretrain) | asa_pretrain | 10 |" in printed and f"| {a} | asa_pretrain | 10 |" in printed
    assert result["target"]["kind"] == "continuous" and result["table"] == ["ridge/r2", "ridge/mae", "knn/r2", "knn/mae"]
    for row in result["rows"]:
        for m in result["table"]:
            est = row["metrics"][m]
            assert est["ci_low"] <= est["value"] <= est["ci_high"] and est["n_resamples"] == 50
    md = (out / "probe.md").read_text()
    assert md.count("\n| ") == 5 and " [" in md  # header, rule, 3 rows; intervals in brackets
    rows = list(csv.DictReader((out / "probe.csv").open()))
    assert [r["encoder"] for r in rows] == [str(a), str(b), "random-init (asa_pretrain)"]
    assert float(rows[0]["ridge/mae_low"]) <= float(rows[0]["ridge/mae"]) <= float(rows[0]["ridge/mae_high"])
    texts = ["".join(t.itertext()) for t in ET.parse(out / "probe.svg").getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert {r["name"] for r in result["rows"]} <= set(texts)  # the rows, named on the left
    assert sum(t.startswith(("ridge ", "knn ")) for t in texts) == 4  # a panel per table metric
    assert json.loads((out / "probe.json").read_text())["rows"][2]["source"] == "random"
    # the random row is the first file's network, randomly initialised (seeded): its features differ from a's
    assert result["rows"][2]["metrics"]["ridge/mae"]["value"] != result["rows"][0]["metrics"]["ridge/mae"]["value"]

    with pytest.raises(RunDirError, match=r"output=.* already holds results \(probe.md"):
        probe(compose_config("probe", probe_overrides(aged, out, a, extra=["task=case", "task.target=age"])))
    again = probe(compose_config("probe", probe_overrides(aged, out, a, extra=["task=case", "task.target=age", "overwrite=true"])))
    assert len(again["rows"]) == 1 and list(tmp_path.glob("out.replaced-*"))


@pytest.mark.slow
def test_probe_of_a_class_target_and_of_an_encoder_export(tmp_path, aged):
    a = encoder_checkpoint(tmp_path / "a.pt", 1)
    export = tmp_path / "encoder.safetensors"
    state = torch.load(a, weights_only=True)
    save_export_safetensors(export, {"encoder": {k: v for k, v in state["model"].items() if k.startswith("encoder.")},
                                     "network": state["network"]})
    result = probe(compose_config("probe", probe_overrides(aged, tmp_path / "dx", export, a, extra=[
        "task=case", "task.target=diagnosis", "names=[export,checkpoint]"])))
    assert result["target"]["kind"] == "multiclass" and result["target"]["classes"] == ["AD", "CN", "MCI"]
    export_row, ckpt_row = result["rows"]
    assert (export_row["name"], ckpt_row["name"]) == ("export", "checkpoint")
    for m in result["table"]:  # the export holds the checkpoint's encoder: the same numbers
        assert export_row["metrics"][m] == ckpt_row["metrics"][m]
    assert set(result["table"]) == {"logistic/balanced_accuracy", "logistic/auroc", "knn/balanced_accuracy", "knn/auroc"}


@pytest.mark.slow
def test_probe_of_voxel_labels_and_an_sa_swin_encoder(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=32, seed=1)
    sizes = dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 4])
    swin = encoder_checkpoint(tmp_path / "swin.pt", 0, "sa_swin_pretrain", **sizes)
    base = ["data=ibsr", f"data.root={root}", "device=cpu", "folds=2", "bootstrap=20", "knn_k=3"]
    with pytest.raises(OptionError, match=r"records no input size .* pass crop=N"):
        probe(compose_config("probe", [f"encoders=[{swin}]", f"output={tmp_path / 'x'}", *base]))
    result = probe(compose_config("probe", [f"encoders=[{swin},random]", f"output={tmp_path / 'v'}", "crop=32", *base]))
    row = result["rows"][0]
    assert (row["arch"], row["stride"], row["dim"], row["kind"]) == ("sa_swin_pretrain", 8, 48, "voxel")
    assert set(row["metrics"]) == {"ridge/r2_CSF", "ridge/r2_GM", "ridge/r2_WM", "ridge/r2_mean", "knn/accuracy"}
    assert result["rows"][1]["name"] == "random-init (sa_swin_pretrain)"


@pytest.mark.parametrize("extra, error, match", [
    (["encoders=[random]"], OptionError, r"encoders: 'random' takes the network spec of the first checkpoint"),
    (["encoders=[random:huge]"], OptionError, r"unknown preset 'huge'"),
    (["encoders=[nowhere.pt]"], OptionError, r"encoders: nowhere.pt: no such file"),
    (["names=[a,b]"], OptionError, r"names: 2 name\(s\) for 1 encoder"),
    (["folds=1"], OptionError, r"folds=1: expected at least 2"),
    (["task=case", "task.target=null"], OptionError, r"needs task.target"),
    (["channels=[t1,flair]"], OptionError, r"channels=\['t1', 'flair'\]"),
])
def test_probe_refusals_name_the_option(tmp_path, aged, extra, error, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = encoder_checkpoint(tmp_path / "a.pt", 1)
    overrides = probe_overrides(aged, tmp_path / "out", a, extra=["task=case", "task.target=age"])
    overrides = [o for o in overrides if not any(o.split("=")[0] == e.split("=")[0] for e in extra)] + extra
    with pytest.raises(error, match=match):
        probe(compose_config("probe", overrides))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_console_script_refuses_with_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "asa.cli.probe", "encoders=[random]", f"output={tmp_path / 'o'}"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "[asa-probe] refused: encoders: 'random'" in done.stderr


@pytest.mark.slow
def test_probe_of_a_resenc_encoder_pools_its_bottleneck(tmp_path, aged):
    """A residual-encoder U-Net (asa's own or a published file) is probed on its bottleneck's voxels at the
    encoder's total stride (it used to stop with a tensor size mismatch); one with the coordinate channel is
    probed with the channel beside the image (tests/eval/test_frozen_coordinates.py checks its tokens)."""
    plain = encoder_checkpoint(tmp_path / "resenc.pt", 1, "resenc_pretrain", img_size=32, size="tiny")
    result = probe(compose_config("probe", probe_overrides(aged, tmp_path / "out", plain, "random",
                                                      extra=["task=case", "task.target=age"])))
    assert [r["name"] for r in result["rows"]] == [str(plain), "random-init (resenc_pretrain)"]
    assert result["rows"][0]["stride"] == 8 and result["rows"][0]["size"] == [32] * 3
    assert result["rows"][0]["dim"] == 64  # the bottleneck's channels (tiny plan at 32³: 8 … 64)
    assert all(math.isfinite(r["metrics"]["ridge/mae"]["value"]) for r in result["rows"])
    coord = encoder_checkpoint(tmp_path / "coord.pt", 1, "resenc_pretrain", img_size=32, coord_channel=True, size="tiny")
    result = probe(compose_config("probe", probe_overrides(aged, tmp_path / "out2", coord, extra=["task=case", "task.target=age"])))
    assert result["rows"][0]["stride"] == 8 and result["rows"][0]["dim"] == 64
    assert math.isfinite(result["rows"][0]["metrics"]["ridge/mae"]["value"])


def test_probe_matches_channel_names_without_regard_to_case(tmp_path):
    """An nnU-Net raw set whose dataset.json names its channel ``T1`` is probed with ``channels=[t1]`` (the
    default); a channel the data lacks is refused naming ``channels=`` and the data's channels."""
    root = write_demo_dataset("msd", tmp_path / "msd", cases=4, size=32, seed=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "FLAIR", "1": "T1", "2": "T1gd", "3": "T2w"}
    (root / "dataset.json").write_text(json.dumps(meta))
    a = encoder_checkpoint(tmp_path / "a.pt", 1)
    base = [f"encoders=[{a}]", "data=msd", f"data.root={root}", "device=cpu", "folds=2", "bootstrap=0", "knn_k=3"]
    with pytest.raises(OptionError, match=r"channels=\['t2'\]: the .* task has channels \['FLAIR', 'T1', 'T1gd', "
                                          r"'T2w'\]; 't2': no such channel"):
        probe(compose_config("probe", [*base, "channels=[t2]", f"output={tmp_path / 'x'}"]))
    assert not (tmp_path / "x").exists()
    result = probe(compose_config("probe", [*base, f"output={tmp_path / 'out'}"]))
    assert result["rows"][0]["kind"] == "voxel" and result["rows"][0]["metrics"]["ridge/r2_mean"]["value"] is not None
