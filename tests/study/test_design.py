"""asa/study/design.py: the design registered before any score (design.json), a rerun of it adding nothing, a change
before a look amending it, a change after a look taking another look; the page reading the primary over its looks
(Bonferroni, asa.study.readings.Looks), from hand-made scores whose interval is checked at 1 − 0.05/2."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from asa.data.synthetic.demo import write_demo_dataset
from asa.eval.random_effects import crossed_interval
from asa.study.cost import Costs, StepCost
from asa.study import readings, report, stages, study, tables
from asa.study.design import FILE, Design, load, register_design, take_look
from asa.study.readings import Looks

REGISTERED = Design(arms=("mae", "noise", "supervised"), primary="mae − scratch", n=2, cases=(2,), seeds=(0, 1, 2, 3),
                folds=0, repeats=0, pretrain_runs=1, pretrain_steps=100, pilot_steps=200, budget_cap=None,
                head_start=None, endpoint="lesion Dice (lesion)", alpha=0.05, min_effect=0.01, looks=1)
MORE = dataclasses.replace(REGISTERED, seeds=(0, 1, 2, 3, 4, 5))

# mae − scratch per seed (4) and test case (6): 0.045 + a seed part + a case part + an interaction, whose crossed
# 95 % interval lies above 0 and whose 97.5 % interval holds it
SEED, CASE = np.array([0.01, -0.01, 0.02, -0.02]), np.array([0.03, -0.02, 0.01, -0.01, 0.02, -0.03])
NOISE = 0.01 * np.array([[1, -1, 0, 1, -1, 0], [0, 1, -1, 0, 1, -1], [-1, 0, 1, -1, 0, 1], [1, 0, -1, 0, -1, 1]])
MAE = 0.045 + SEED[:, None] + CASE[None, :] + NOISE
MACHINE = {"cpu": "test", "usable_cores": 1, "cpu_count": 1, "torch_threads": 1, "torch": "2", "gpu": None}


def _scores() -> list[dict]:
    """Score rows of scratch, mae (``MAE`` above scratch), the negative control (near scratch) and the positive one
    (well above): one class, "lesion", the endpoint."""
    above = {"scratch": 0 * MAE, "mae-c4": MAE, "noise-c4": 0.1 * NOISE, "supervised": 0.2 + NOISE}
    rows = []
    for arm, d in above.items():
        group, encoder = arm, arm.split("-")[0]
        for seed in range(MAE.shape[0]):
            for k in range(MAE.shape[1]):
                dice = 0.5 + 0.05 * k + float(d[seed, k])
                rows.append({"arm": arm, "n": 2, "seed": seed, "case": f"case{k}", "Dice_lesion": dice,
                             "Dice_mean": dice, "Dice_lesion_zeroed": 0.1, "Dice_mean_zeroed": 0.1,
                             "encoder_arm": encoder, "cohort": 4 if "-c" in arm else "", "replicate": 0,
                             "group": group})
    return rows


def _info() -> dict:
    runs = [{"run": f"{arm}-c4", "arm": arm, "cohort": 4, "steps": 100, "seconds": 10.0,
             "val_curve": [[1, 0.9], [100, 0.8]], "plateau": None, "loss_drop": float("nan"),
             "loss_rise": float("nan")} for arm in ("mae", "noise")]
    return {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-12-01T12:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2, 3], "test": 6, "val": 2}, "steps": 40,
            "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": ["lesion"],
            "lesion_classes": [], "pilot": {"test": {"lesion": 0.7}}, "pretraining": runs, "encoders": [],
            "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": ["asa-study ..."], "runs": {},
            "probes": None, "design": None}


def _primary(looks: Looks) -> dict:
    said = readings.read(_scores(), _info(), n_boot=200, looks=looks)
    assert said.primary is not None and said.primary.arm == "mae-c4"
    return said.primary.to_dict()


def test_a_study_extended_after_a_look_takes_a_second_and_reads_its_primary_over_both(tmp_path):
    register_design(tmp_path, REGISTERED, now="2026-12-01T10:00:00")
    assert take_look(tmp_path, now="2026-12-01T11:00:00") == Looks(taken=1, planned=1)
    # more draws after the page read the scores: an extension, and the next reading another look
    register_design(tmp_path, MORE, now="2026-12-01T11:30:00")
    looks = take_look(tmp_path, now="2026-12-01T12:00:00")
    assert looks == Looks(taken=2, planned=1, extended=("2026-12-01T11:00:00: seeds 0 1 2 3 → 0 1 2 3 4 5",))
    record = json.loads((tmp_path / FILE).read_text())
    assert [k["at"] for k in record["looks"]] == ["2026-12-01T11:00:00", "2026-12-01T12:00:00"]
    assert record["changes"] == [{"at": "2026-12-01T11:30:00", "after_look": 1,
                                  "changed": ["seeds 0 1 2 3 → 0 1 2 3 4 5"]}]
    assert record["looks"][0]["design"]["seeds"] == [0, 1, 2, 3] and record["design"]["seeds"] == [0, 1, 2, 3, 4, 5]
    # the report read again, the same design: no third look
    assert take_look(tmp_path, now="2026-12-01T13:00:00") == looks and len(load(tmp_path).looks) == 2

    # the primary's CI is the interval at 1 − 0.05/2, wider than the 95 % one, its bound one-sided at 97.5 %
    uncorrected, corrected = _primary(Looks()), _primary(looks)
    at = {c: crossed_interval(MAE, confidence=c, factors=("seed", "case")) for c in (0.95, 0.975)}
    assert uncorrected["Dice_mean"] == pytest.approx([0.045, at[0.95].low, at[0.95].high])
    assert corrected["Dice_mean"] == pytest.approx([0.045, at[0.975].low, at[0.975].high])
    assert corrected["Dice_mean"][1] < 0 < uncorrected["Dice_mean"][1] < uncorrected["Dice_mean"][2] < \
        corrected["Dice_mean"][2]
    assert corrected["bound90"] == pytest.approx([at[0.95].low, at[0.95].high])
    assert corrected["mde"] > uncorrected["mde"]
    # above 0 at 95 %, not at 97.5 %: helped read once, inconclusive over both looks
    assert uncorrected["verdict"] == "helped" and corrected["verdict"] == readings.Verdict.INCONCLUSIVE
    assert "looks" not in uncorrected and (corrected["looks"], corrected["level"]) == (2, "97.5 %")

    outputs = tables.write_outputs(_scores(), ["lesion"], {"mae-c4": "scratch", "noise-c4": "scratch",
                                                           "supervised": "scratch", "scratch": "scratch"},
                                   tmp_path / "transfer", n_boot=200)
    page = (report.write_report(tmp_path, _info(), outputs, n_boot=200, looks=looks) / "README.md").read_text()
    assert ("The study was extended after a look (at 2026-12-01T11:00:00: seeds 0 1 2 3 → 0 1 2 3 4 5): the primary "
            "is read at 97.5 % (Bonferroni over 2 looks)") in page
    assert "**Primary:** does masked pretraining help? (mae − scratch) At N = 2, read at 97.5 % (Bonferroni over 2 " \
           "looks): inconclusive" in page
    assert "read at 97.5 % (its CI; Bonferroni over 2 looks)" in page and "two-sided 2.5 %" in page
    once = (report.write_report(tmp_path / "once", _info(), outputs, n_boot=200) / "README.md").read_text()
    assert "extended after a look" not in once and "At N = 2: helped" in once


def test_the_same_design_adds_nothing_and_a_change_before_any_look_is_an_amendment(tmp_path):
    first = register_design(tmp_path, REGISTERED, now="2026-12-01T10:00:00")
    written = (tmp_path / FILE).read_text()
    assert register_design(tmp_path, REGISTERED, now="2026-12-01T10:30:00") == first
    assert (tmp_path / FILE).read_text() == written
    amended = register_design(tmp_path, dataclasses.replace(MORE, arms=("mae", "noise")), now="2026-12-01T10:45:00")
    assert amended.design.arms == ("mae", "noise") and amended.registered == "2026-12-01T10:00:00"
    assert amended.changes[0].after_look == 0 and amended.changes[0].changed == (
        "arms mae noise supervised → mae noise", "seeds 0 1 2 3 → 0 1 2 3 4 5")
    assert take_look(tmp_path) == take_look(tmp_path) == Looks(taken=1, planned=1)  # one look, no extension
    assert len(load(tmp_path).looks) == 1
    # looks planned up front: every reading, the first too, at 1 − 0.05/K
    planned = Looks(taken=1, planned=2)
    assert (planned.count, planned.alpha, planned.level) == (2, 0.025, "97.5 %")
    assert report.looks_line(planned).startswith("The study planned 2 looks (--looks): the primary is read at 97.5 %")
    assert report.looks_line(Looks()) is None


@pytest.mark.slow  # asa-study's checks and plan four times (nothing trained): seconds of config composing
def test_asa_study_registers_its_design_before_any_unit_and_a_dry_run_writes_none(tmp_path, monkeypatch):
    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=9, size=16, seed=1)
    out, seen = tmp_path / "out", []
    monkeypatch.setattr(study, "run_stages", lambda *rest: seen.append(json.loads((out / FILE).read_text())) or 0)
    argv = ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--quick", "--test", "3", "--seeds", "0",
            "--out", str(out), "--budget-cap", "30", "--looks", "2"]
    cost = StepCost(fixed=1.0, step=0.5, round=0.0, val_cases=1, score=1.0)
    monkeypatch.setattr(study, "measure", lambda *rest: Costs("cpu (test)", {"finetune": cost}))
    assert study.main([*argv, "--dry-run"]) == 0 and not out.exists() and not seen  # a dry run registers nothing
    with pytest.raises(SystemExit) as refused:
        study.main([*argv, "--looks", "0"])
    assert refused.value.code == 2 and not out.exists()
    assert study.main(argv) == 0 and study.main(argv) == 0
    assert seen[0] == seen[1]  # registered before the units ran, and the same design again adds nothing
    design = seen[0]["design"]
    assert (design["arms"], design["seeds"], design["budget_cap"], design["looks"], design["alpha"]) == \
        (["supervised"], [0], 30, 2, 0.05)
    endpoint = json.loads((out / "checks" / "checks.json").read_text())["endpoint"]["label"]
    assert design["primary"] is None and design["endpoint"] == endpoint and not seen[0]["looks"]
    assert study.main([*argv[:-1], "1"]) == 0  # another plan of looks before any look: an amendment
    assert load(out).changes[0].changed == ("looks 2 → 1",) and load(out).changes[0].after_look == 0


def test_the_transfer_stage_records_its_look_before_it_writes_a_difference(tmp_path, monkeypatch):
    """The transfer stage's tables give every arm's Δ to its twin: the look is in design.json before either budget's
    tables are written, so a reading that stops after them (the page failing) was still recorded as one; the report
    reads the primary over the looks it took, and a rerun of the finished study adds none."""
    register_design(tmp_path, REGISTERED, now="2026-12-01T10:00:00")
    seen = []

    def written(*args) -> None:  # transfer.results and head_start_results: the looks recorded when each writes
        seen.append(len(load(tmp_path).looks))

    monkeypatch.setattr(stages.transfer, "run_seconds", lambda settings, runs, times: [])
    monkeypatch.setattr(stages.transfer, "results", written)
    monkeypatch.setattr(stages.transfer, "head_start_results", written)
    setup = SimpleNamespace(study=SimpleNamespace(out=tmp_path))
    staged = SimpleNamespace(settings=None, runs=(), cfg=None)
    found = stages.Findings(times={"runs": {}})
    assert stages.TransferStage().read(setup, found, staged) is None
    assert seen == [1, 1] and found.looks == Looks(taken=1, planned=1)
    stages.TransferStage().read(setup, stages.Findings(times={"runs": {}}), staged)
    assert seen == [1, 1, 1, 1] and len(load(tmp_path).looks) == 1
