"""studies/pretraining.py: the one-command study on phantoms at toy scale, its report, resume and refusals."""
from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from asa.data.synthetic import anatomy
from studies import pretraining as study

ROOT = Path(__file__).resolve().parents[2]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_probe_outputs_from_logged_rounds():
    hist = {"mae": [{"step": 2, "epoch": 1, "val/loss": 0.6, "probe/r2_mean": 0.5, "probe/knn_acc": 0.8, "probe/r2_GM": 0.4},
                    {"step": 4, "epoch": 2, "val/loss": 0.5, "probe/r2_mean": 0.6, "probe/knn_acc": 0.9, "probe/r2_GM": 0.5}],
            "asa": [{"step": 2, "epoch": 1, "val/loss": 0.7, "probe/r2_mean": 0.55, "probe/knn_acc": 0.85, "probe/r2_GM": 0.45}]}
    md, table, svg = study.probes_outputs(hist)
    assert "| 2 | 4 | 0.5000 | 0.6000 | 0.9000 |" in md and "**asa**" in md and "probe/r2_GM" in md
    rows = list(csv.DictReader(table.splitlines()))
    assert [(r["arm"], r["epoch"], r["probe/r2_mean"]) for r in rows] == [("mae", "1", "0.500000"), ("mae", "2", "0.600000"),
                                                                           ("asa", "1", "0.550000")]
    texts = {"".join(t.itertext()) for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    assert {"mae", "asa", "pretraining epoch", "probe R² (mean over classes)"} <= texts  # a line per arm, in the legend


def test_scale_checks(tmp_path):
    with pytest.raises(SystemExit, match="--crop 32: must be smaller than --volume 32"):
        study.main(["--quick", "--crop", "32", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="leaves 2 training case"):
        study.main(["--quick", "--labeled", "6", "--cases", "4", "--out", str(tmp_path / "b")])


def test_anatomy_switch_names_the_extra(monkeypatch, tmp_path):
    """Without nilearn, --anatomy stops naming the optional extra, before a subject is written."""
    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn -> ImportError
    for cached in (anatomy._load_template, anatomy._template_on_grid):
        cached.cache_clear()
    try:
        with pytest.raises(SystemExit, match=r"asa\[anatomy\]"):
            study.dataset_writer(True)("msd", tmp_path / "x", cases=1, size=32, seed=0, lesions=True)
    finally:  # the next test loads the real template again
        for cached in (anatomy._load_template, anatomy._template_on_grid):
            cached.cache_clear()


@pytest.mark.slow  # one pretraining run and eight fine-tuning runs (about a minute on one CPU thread)
def test_whole_study_at_toy_scale_writes_the_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--quick", "--subjects", "5", "--labeled", "6", "--test", "4", "--cases", "2", "--seeds", "0", "1",
            "--arms", "asa", "--recipes", "sgd", "adamw", "--n-boot", "300", "--out", str(out)]
    assert study.main(argv) == 0
    report = out / "report"
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["README.md", "transfer.md", "transfer.csv", "scores.csv", "runs.csv", "dice_vs_cases.svg", "probes.md",
         "probes.csv", "probe_curves.svg", "report.json"])
    arms = ["scratch@sgd", "asa@sgd", "scratch@adamw", "asa@adamw"]  # every arm under every recipe
    # every arm x N x seed x test case scored, Dice and HD95 per class
    scores = _csv(report / "scores.csv")
    assert len(scores) == len(arms) * 1 * 2 * 4
    assert {r["arm"] for r in scores} == set(arms) and {r["seed"] for r in scores} == {"0", "1"}
    assert all(0.0 <= float(r["Dice_mean"]) <= 1.0 and float(r["HD95_mean"]) >= 0.0 for r in scores)
    assert len({r["case"] for r in scores}) == 4  # one fixed test split for every run
    # the table: one row per arm, each pretrained arm against scratch under its own recipe
    rows = {r["arm"]: r for r in _csv(report / "transfer.csv")}
    assert sorted(rows) == sorted(arms) and rows["scratch@sgd"]["delta"] == rows["scratch@adamw"]["delta"] == ""
    assert rows["asa@sgd"]["reference"] == "scratch@sgd" and rows["asa@adamw"]["reference"] == "scratch@adamw"
    for arm in ("asa@sgd", "asa@adamw"):
        r = rows[arm]
        assert float(r["delta_lo"]) <= float(r["delta"]) <= float(r["delta_hi"])
        assert len(r["delta_per_seed"].split()) == 2 and r["delta_case_lo"] and r["delta_HD95_mean_hi"]
    # the budget check: one row per run, with the recipe's optimiser visible in the encoder's update
    runs = _csv(report / "runs.csv")
    assert len(runs) == len(arms) * 2 and all(r["plateau"] in ("True", "False") for r in runs)
    enc = {r["arm"]: float(r["rel_update_ratio"]) for r in runs if r["seed"] == "0"}
    assert enc["asa@adamw"] > 3 * enc["asa@sgd"]  # the paper's one-lr SGD barely moves the encoder
    # probes logged by the pretraining run
    probes = _csv(report / "probes.csv")
    assert {r["arm"] for r in probes} == {"asa"} and all(r["probe/r2_mean"] for r in probes)
    info = json.loads((report / "report.json").read_text())
    assert list(info["stages"]) == ["cohort", "pretrain asa", "transfer"]
    assert not any(s["reused"] for s in info["stages"].values())
    assert info["machine"]["usable_cores"] >= 1 and info["scale"]["seeds"] == [0, 1]
    readme = (report / "README.md").read_text()
    for text in ("asa-pretrain experiment=asa", "probe.every=1", "python -m asa.study.transfer", "--recipes sgd adamw",
                 "--arm asa=model.pretrained=", "| transfer |", "Machine:", "Δ per seed", "**asa**", "Budget check"):
        assert text in readme, text
    # fine-tuning crops smaller than the volume: the runs' configs say so
    run_cfg = (out / "transfer" / "runs" / "asa@sgd-n2-s1" / "config.yaml").read_text()
    assert "crop: 24" in run_cfg and "name: sgd" in run_cfg and info["scale"]["volume"] == 32

    # the same command again: every stage found done, nothing retrained, the same scores
    ckpt = out / "transfer" / "runs" / "asa@adamw-n2-s0" / "checkpoints" / "last.pt"
    before = ckpt.stat().st_mtime_ns
    assert study.main(argv) == 0
    assert ckpt.stat().st_mtime_ns == before
    again = json.loads((report / "report.json").read_text())["stages"]
    assert all(again[s]["reused"] for s in ("cohort", "pretrain asa"))
    assert again["pretrain asa"]["seconds"] == info["stages"]["pretrain asa"]["seconds"]
    assert _csv(report / "scores.csv") == scores
    # other settings into the same folder are refused
    with pytest.raises(SystemExit, match="other settings"):
        study.main([*argv, "--steps", "5"])


@pytest.mark.parametrize("scale", ["full", "gpu"], ids=["full-scale", "gpu-scale"])  # an id "gpu" reads as the marker
@pytest.mark.slow
def test_dry_run_checks_every_configuration_and_writes_nothing(tmp_path, capsys, scale):
    out = tmp_path / "study"
    assert study.main(["--scale", scale, "--anatomy", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    runs = {"full": 2 * 5 * 4 * 2, "gpu": 4 * 5 * 4 * 2}[scale]  # cases × seeds × (scratch + 3 arms) × recipes
    assert f"transfer {runs} runs" in text and "recipes sgd, adamw" in text and "heterotopia" in text
    assert not out.exists()
    with pytest.raises(SystemExit, match="--crop"):  # the scale's checks run first
        study.main(["--scale", scale, "--crop", "256", "--dry-run", "--out", str(out)])


def test_comparison_command_adds_the_from_scratch_baselines(tmp_path, capsys):
    """The comparison command (docs/studies.md, "The whole study in one command"): every SSL arm plus DynUNet
    from scratch, each run configured (dry run), and the DynUNet arm handed to the transfer study as a network
    of its own, without a pretrained encoder."""
    out = tmp_path / "compare"
    page = (ROOT / "docs" / "studies.md").read_text()
    block = page[page.index("## Comparing methods"):]
    command = shlex.split(re.sub(r"\\\n\s*", " ", block.split("```bash\n", 1)[1].split("```", 1)[0]))
    assert command[:3] == ["python", "-m", "studies.pretraining"]  # the documented command, as written
    argv = [*command[3:command.index("--out")], "--dry-run", "--out", str(out)]
    assert study.main(argv) == 0
    text = capsys.readouterr().out
    assert "transfer 18 runs" in text and "+ dynunet from scratch" in text and "pretraining asa, mae, rpl, jigsaw" in text
    assert not out.exists()
    args = argparse.Namespace(layout="msd", device="cpu", n_boot=10, threads=None, time_budget=None,
                              drop_checkpoints=False, anatomy=False, override=[], baselines=["dynunet"], seed=0)
    scale = study.SCALES["quick"]
    argv = study.transfer_argv(args, scale, tmp_path, {"asa": tmp_path / "encoder.pt"}, tmp_path / "t")
    arms = [argv[i + 1] for i, a in enumerate(argv) if a == "--arm"]
    assert arms == [f"asa=model.pretrained={tmp_path / 'encoder.pt'}", "dynunet=model=dynunet"]
    with pytest.raises(SystemExit):  # only the known baselines
        study.main(["--baselines", "unet", "--dry-run", "--out", str(out)])
