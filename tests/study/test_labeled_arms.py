"""A labeled arm is an arm as a pretraining one is (asa.study.runs.plan_arms): a second one, declared beside the
positive control, trains its own run in its own folder (``<arm>``, or ``<arm>-s<g>`` per cross-validated draw), is
fine-tuned under its name with its own fine-tuning overrides (`Arm.finetune`), read as its own question, and has its
row in the Cost table, grouped by its units' arm. The studies below run every stage for real, their units stood in
for: each unit's inputs written and its seconds counted, every fine-tuning run scored with planted Dice."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from asa.data import get_task
from asa.data.synthetic.demo import write_demo_dataset
from asa.io import atomic_write_json
from asa.study import stages, study, tables
from asa.study.arms import ARMS, Arm, Contrast
from asa.study.runs import SCALES, FixedSplit, Network, Pretraining, finetune_arms, labeled_split, plan_labeled
from asa.study.scheduler import JsonFile, Unit

SUP2 = Arm("sup2", (Contrast("scratch", "does an encoder trained with labels at another lr help? (sup2 − scratch)",
                             "positive"),), labels=True, overrides=("optim.base_lr=0.002",),
           finetune=("optim.weight_decay=0.01",))
DELTA = {"scratch": 0.0, "supervised": 0.05, "sup2": 0.1}  # each arm's planted Dice over scratch's


def _scored(spec: dict, names: list[str]) -> None:
    """A scoring unit's runs scored as `asa.study.transfer.score` writes them: a row per test case, Dice planted by
    arm, and a budget check over a rising validation curve (the pilot's reads it)."""
    for run in (run for group in spec["groups"] for run in group):
        rows = []
        for k, case in enumerate(run["test"] or spec["test"]):
            dice = 0.4 + DELTA[run["identity"]["encoder_arm"]] + 0.01 * k + 0.005 * run["seed"]
            row = {"arm": run["arm"], "n": run["n"], "seed": run["seed"], "case": case}
            if run["repeat"] is not None:
                row |= {"repeat": run["repeat"], "fold": run["fold"]}
            for c in [*names, "mean"]:
                row |= {f"Dice_{c}": dice, f"Dice_{c}_zeroed": 0.1, f"HD95_{c}": 5.0, f"NSD_{c}": dice}
            rows.append(row)
        curve = [[10 * (i + 1), min(0.6, 0.1 * i)] for i in range(8)]
        budget = {"arm": run["arm"], "n": run["n"], "seed": run["seed"], "steps": 12, "train": " ".join(run["train"]),
                  **tables.budget_check([1.0, 0.8, 0.7, 0.65, 0.62, 0.6, 0.59, 0.58], [0.01] * 8, [0.02] * 8),
                  "val_curve": curve}
        atomic_write_json(Path(run["run_dir"]) / "scores.json", {"scores": rows, "budget": budget, "names": names})


def _study(out: Path, labeled: Path, *options: str) -> list[Unit]:
    """asa-study on ``labeled`` with sup2 declared, every unit stood in for; the units it ran."""
    ran: list[Unit] = []
    names = list(get_task("msd", labeled).output_names)

    def stand_in(units, jobs, clock, times, memory_gib) -> bool:
        for unit in units:
            ran.append(unit)
            for needed in unit.inputs:
                needed.write()
                if isinstance(needed, JsonFile) and needed.path.parent.name == "scoring":
                    _scored(needed.content, names)
            times[unit.name] = times.get(unit.name, 0.0) + 2.0
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ARMS, SUP2.name, SUP2)
        patch.setattr(stages, "run_units", stand_in)
        argv = ["--data", "msd", "--root", str(labeled), "--out", str(out), "--quick", "--n-boot", "50",
                "--threads", "1", "--device", "cpu", *options]
        assert study.main(argv) == 0
    return ran


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """sup2 alone (a fixed split: 3 test, 2 validation, a pool of 2 and the 2 cases the labeled arms train on)."""
    base = tmp_path_factory.mktemp("labeled-arms")
    labeled = write_demo_dataset("msd", base / "labeled", cases=9, size=16, seed=1)
    units = _study(base / "study", labeled, "--test", "3", "--crop", "16", "--arms", "sup2")
    return base / "study", labeled, units


@pytest.fixture(scope="module")
def crossed(tmp_path_factory):
    """The positive control and sup2 on 18 cases, cross-validated (2 folds × 1 repeat): a run of each per draw."""
    base = tmp_path_factory.mktemp("labeled-arms-cv")
    labeled = write_demo_dataset("msd", base / "labeled", cases=18, size=16, seed=3)
    units = _study(base / "study", labeled, "--test", "16", "--crop", "16", "--arms", "supervised", "sup2")
    return base / "study", labeled, units


def _argv(unit: Unit, key: str) -> str:
    return next(a.split("=", 1)[1] for a in unit.argv if a.startswith(f"{key}="))


@pytest.mark.slow  # asa-study's checks, plan and report (its units stood in for): seconds of config composing
def test_a_second_labeled_arm_trains_its_own_run_is_fine_tuned_and_read_under_its_own_name(fixed):
    out, labeled, units = fixed
    split = json.loads((out / "checks" / "checks.json").read_text())["split"]
    [run] = [u for u in units if u.name == "sup2"]
    assert _argv(run, "output_dir") == str(out / "pretrain" / "sup2") and run.arm == "sup2"
    assert json.loads((out / "pretrain" / "sup2" / "splits.json").read_text())["train"] == split["supervised"]
    assert not (out / "pretrain" / "supervised").exists() and not [u for u in units if "supervised" in u.name]
    with open(out / "transfer" / "scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert {r["arm"] for r in scores} == {"scratch", "sup2"}
    assert {r["encoder_arm"] for r in scores if r["arm"] == "sup2"} == {"sup2"}
    tuned = [u for u in units if u.name.startswith("transfer/sup2-")]
    encoder = out / "pretrain" / "sup2" / "checkpoints" / "last.pt"
    assert len(tuned) == 2 and all(_argv(u, "model.pretrained") == str(encoder) for u in tuned)
    contrasts = json.loads((out / "report" / "contrasts.json").read_text())
    [read] = [c for c in contrasts if c["arm"] == "sup2"]
    assert (read["reference"], read["kind"], read["question"]) == ("scratch", "positive", SUP2.contrasts[0].question)
    page = (out / "report" / "README.md").read_text()
    assert "Positive control (sup2 − scratch)" in page and "| sup2 | fine-tuning (control) | 2 | — |" in page


@pytest.mark.slow
def test_an_arm_s_own_overrides_reach_its_labeled_run_and_its_fine_tuning_overrides_its_transfer_runs_alone(fixed):
    """sup2's ``overrides`` train its encoder (after the study's), its ``finetune`` its scored runs (after the
    study's), never the scratch twin's nor the pilot's."""
    out, _, units = fixed
    [run] = [u for u in units if u.name == "sup2"]
    assert run.argv[-3:] == ("optim.base_lr=0.002", f"output_dir={out / 'pretrain' / 'sup2'}", "trainer.threads=1")
    assert "optim.weight_decay=0.01" not in run.argv
    tuned = [u for u in units if u.config is not None and u.name.startswith("transfer/")]
    for unit in tuned:
        own = "optim.weight_decay=0.01" in unit.argv
        assert own == (unit.arm == "sup2"), unit.name
        if own:  # after the study's recipe
            assert unit.argv.index("optim.weight_decay=0.01") > unit.argv.index("optim=adamw")
    assert {u.arm for u in tuned} == {"scratch", "sup2"}
    assert not any("optim.base_lr=0.002" in u.argv for u in units if u is not run)


@pytest.mark.slow
def test_every_unit_knows_its_arm(fixed, crossed):
    for _, _, units in (fixed, crossed):
        assert units and all(u.arms for u in units)
        for unit in units:
            if unit.config is not None:  # a unit that trains one run: that run's arm
                assert unit.arm is not None and unit.name.split("/")[-1].startswith(unit.arm), unit.name
            else:  # scoring: every arm among its runs
                assert set(unit.arms) <= {"scratch", "supervised", "sup2"}


@pytest.mark.slow
def test_a_cross_validated_study_runs_each_labeled_arm_per_draw_with_its_cost_row(crossed):
    out, _, units = crossed
    draws = json.loads((out / "checks" / "checks.json").read_text())["split"]["draws"]
    for arm in ("supervised", "sup2"):
        for g, draw in enumerate(draws):
            [run] = [u for u in units if u.name == f"{arm}-s{g}"]
            assert run.arm == arm and _argv(run, "output_dir") == str(out / "pretrain" / f"{arm}-s{g}")
            trained = json.loads((out / "pretrain" / f"{arm}-s{g}" / "splits.json").read_text())["train"]
            assert trained == sorted(draw["pool"]) and not set(trained) & set(draw["test"])
    page = (out / "report" / "README.md").read_text()
    cost = page[page.index("## Cost"):]
    assert "| supervised | fine-tuning (control, 2 runs) | 2 per run | — |" in cost
    assert "| sup2 | fine-tuning (control, 2 runs) | 2 per run | — |" in cost
    record = json.loads((out / "report" / "report.json").read_text())
    assert record["controls"] == {"supervised": ["supervised-s0", "supervised-s1"], "sup2": ["sup2-s0", "sup2-s1"]}
    assert {c["arm"] for c in record["contrasts"] if c["kind"] == "positive"} == {"supervised", "sup2"}


@pytest.mark.slow
def test_each_draw_s_control_trains_just_before_the_first_run_that_starts_from_it(crossed):
    """Each labeled arm's run of a draw trains in the transfer stage, after the pilot's reading, just before the
    first fine-tuning run that starts from its encoder, and every run that does waits for it: a study resumed on a
    new machine from its progress record trains again at most the control of the draw it stopped in."""
    out, _, units = crossed
    names = [u.name for u in units]
    pilot_read = max(k for k, name in enumerate(names) if name.startswith("pilot/"))
    for arm in ("supervised", "sup2"):
        for g in range(2):
            encoder = out / "pretrain" / f"{arm}-s{g}" / "checkpoints" / "last.pt"
            starts = [k for k, u in enumerate(units) if f"model.pretrained={encoder}" in u.argv]
            assert starts and names.index(f"{arm}-s{g}") == starts[0] - 1 > pilot_read, names
            assert names[starts[0]].startswith(f"transfer/{arm}-n") and names[starts[0]].endswith(f"-s{g}")
            assert all(f"{arm}-s{g}" in units[k].after for k in starts)
    last_of_draw_0 = max(k for k, name in enumerate(names) if name.startswith("transfer/") and name.endswith("-s0"))
    assert min(names.index("supervised-s1"), names.index("sup2-s1")) > last_of_draw_0  # not trained up front


def test_only_the_arm_that_declares_fine_tuning_overrides_takes_them(monkeypatch, tmp_path):
    """finetune_arms: sup2's ``finetune`` on its fine-tuning arm alone, after the network's; the positive control, the
    scratch twin and a pretrained arm fine-tune as before."""
    monkeypatch.setitem(ARMS, SUP2.name, SUP2)
    network, scale = Network("resenc", "tiny"), SCALES["quick"]
    split = labeled_split([SimpleNamespace(id=f"case_{i:02d}") for i in range(24)], scale, seed=0)
    assert isinstance(split, FixedSplit)
    labeled = [run for arm in ("supervised", "sup2") for run in plan_labeled(
        tmp_path, arm, split, network, scale, data="msd", root=tmp_path, seed=0)]
    mae = Pretraining("mae-c4", "mae", 4, (), tmp_path / "pretrain" / "mae-c4")
    arms = finetune_arms([mae], network, labeled, {})
    assert list(arms) == ["scratch", "supervised", "sup2", "mae-c4"]
    assert arms["sup2"].overrides == ("model=resenc", "model.size=tiny", "optim.weight_decay=0.01")
    for name in ("scratch", "supervised", "mae-c4"):
        assert "optim.weight_decay=0.01" not in arms[name].overrides, name
    assert arms["sup2"].drawn(0) == ((*arms["sup2"].overrides, f"model.pretrained={labeled[1].encoder}"),
                                     split.supervised)
    assert [r.overrides[-2] for r in labeled] == ["resume=auto", "optim.base_lr=0.002"]
