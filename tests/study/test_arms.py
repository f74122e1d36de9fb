"""asa/study/arms.py: a study arm is one declaration. A toy arm added here, in one `Arm`, is a choice of --arms,
pretrained by the plan with its own recipe, fine-tuned against its twin with its identity as columns, asked its
question, read as the primary when it ranks first, and a cell of the probe factorial; the built-in contrasts are
the ones the page has always read."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from asa.api.config import compose_config
from asa.data.synthetic.demo import write_demo_dataset
from asa.study import arms, probes, readings, statistics, study
from asa.study.arms import ARMS, Arm, Contrast
from asa.study.cohort import CohortList
from asa.study.runs import SCALES, Network, Pretraining, finetune_arms, plan_pretraining

TOY = Arm("toy", (Contrast("scratch", "does the toy pretraining help? (toy − scratch)"),
                  Contrast("mae", "does the toy add to mae? (toy − mae)")),
          method="asa", loss_weighting="attentive", patch=2, power=2.0, primary=0)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ARMS, "toy", TOY)
    return TOY


def _scores(groups: dict[str, tuple[str, int | None, float]]) -> list[dict]:
    """Scores of each run (name -> its arm, cohort and Δ over scratch), 3 seeds × 6 cases, identity as columns."""
    rows = []
    for name, (arm, cohort, delta) in {"scratch": ("scratch", None, 0.0), **groups}.items():
        for seed in range(3):
            for k in range(6):
                dice = 0.5 + 0.02 * k + 0.01 * seed + delta + 0.004 * ((k + seed) % 3 - 1) * (arm != "scratch")
                rows.append({"arm": name, "n": 2, "seed": seed, "case": f"c{k}", "Dice_mean": dice, "NSD_mean": dice,
                             "encoder_arm": arm, "cohort": "" if cohort is None else cohort, "replicate": 0,
                             "group": arms.label(arm, cohort)})
    return rows


def test_a_toy_arm_declared_once_is_planned_fine_tuned_asked_and_read_as_the_primary(toy, tmp_path):
    assert "toy" in arms.choices() and "toy" in arms.pretraining_arms() and arms.primary_order()[0] == "toy"
    network = Network("resenc", "tiny")
    [run] = plan_pretraining(tmp_path, dataclasses.replace(SCALES["quick"], pretrain_runs=1), network, ["toy"],
                             {4: CohortList(tmp_path / "c4", "")}, None, seed=0)
    assert run.name == "toy-c4" and run.arm == "toy" and run.cohort == 4
    assert {"method=asa", "method.loss_weighting=attentive", "model.weight_patch=2",
            "model.weight_power=2.0"} <= set(run.overrides)
    tuned = finetune_arms([run], network, [], {})
    assert tuned["toy-c4"].identity == {"encoder_arm": "toy", "cohort": 4, "replicate": 0, "group": "toy-c4"}
    rows = readings.contrast_rows(_scores({"toy-c4": ("toy", 4, 0.08), "mae-c4": ("mae", 4, 0.03),
                                           "asa-c4": ("asa", 4, 0.02)}), [4], n_boot=100)
    toy_rows = [r for r in rows if r.encoder_arm == "toy"]
    assert [(r.arm, r.reference) for r in toy_rows] == [("toy-c4", "scratch"), ("toy-c4", "mae-c4")]
    assert toy_rows[0].estimates["Dice_mean"][0] == pytest.approx(0.08)
    primary = rows[readings.family(rows).primary]
    assert (primary.arm, primary.reference, primary.question) == (
        "toy-c4", "scratch", "does the toy pretraining help? (toy − scratch)")
    assert TOY.cell == ("attentive", False)  # the factorial reads it with asa's cell
    effects = probes.factorial_effects([{"arm": a, "cohort": 4, "replicate": 0, "primary": v}
                                        for a, v in (("toy", .3), ("mae", .1), ("mae-coord", .2), ("asa-coord", .4))])
    assert effects[0]["value"] == pytest.approx(0.2)  # (toy + asa-coord − mae − mae-coord) / 2


def test_the_declared_contrasts_are_the_questions_the_page_reads():
    got = {(arms.label(*a), arms.label(*r), kind) for a, r, _, kind in arms.contrasts([4, 40])}
    assert got == {("supervised", "scratch", "positive"), ("noise-c40", "scratch", "negative"),
                   ("mae-c40", "scratch", "question"), ("asa-c40", "scratch", "question"),
                   ("asa-c40", "mae-c40", "question"), ("mae-c40", "noise-c40", "question"),
                   ("asa-coord-c40", "scratch-coord", "question"), ("mae-coord-c40", "scratch-coord", "question"),
                   ("scratch-coord", "scratch", "question"), ("asa-coord-c40", "asa-c40", "question"),
                   ("mae-c40", "mae-c4", "question"), ("asa-c40", "asa-c4", "question")}
    assert arms.primary_order() == ["asa", "mae", "asa-coord", "mae-coord"]
    assert [arms.twin_of(a) for a in ("asa-coord", "mae", "noise", "my-encoder")] == ["scratch-coord", "scratch",
                                                                                      "scratch", "scratch"]


def test_replicates_are_read_from_the_columns_never_from_the_run_names():
    rows = _scores({"run-a": ("asa", 4, 0.02), "run-b": ("asa", 4, 0.04)})
    for r in rows:
        r["replicate"] = 1 if r["arm"] == "run-b" else 0
    assert statistics.runs_of(rows, "asa-c4") == ["run-a", "run-b"]
    assert statistics.interval(rows, "asa-c4", "scratch", 2, "Dice_mean").value == pytest.approx(0.03)


def test_a_replicated_control_is_paired_by_replicate_and_a_run_it_lacks_is_left_out():
    """mae's runs 0, 1, 2 against noise's 0 and 2 (noise's run 1 unscored): run k against run k, mae's run 1 left out
    of mae − noise (paired with another noise run, it would be read against a control matched to another run);
    scratch, one run, is every mae run's reference."""
    runs = {"mae-c4": ("mae", 4, 0.02), "mae-c4-p1": ("mae", 4, 0.05), "mae-c4-p2": ("mae", 4, 0.03),
            "noise-c4": ("noise", 4, 0.0), "noise-c4-p2": ("noise", 4, 0.01)}
    rows = _scores(runs)
    for r in rows:
        r["replicate"] = int(r["arm"][-1]) if "-p" in r["arm"] else 0
    assert statistics.replicate_pairs(rows, "mae-c4", "noise-c4") == [("mae-c4", "noise-c4"),
                                                                      ("mae-c4-p2", "noise-c4-p2")]
    assert statistics.replicate_pairs(rows, "mae-c4", "scratch") == [(run, "scratch") for run in list(runs)[:3]]
    assert statistics.interval(rows, "mae-c4", "noise-c4", 2, "Dice_mean").value == pytest.approx(0.02)
    assert statistics.pooled_matrix(rows, "mae-c4", "noise-c4", 2, "Dice_mean").mean() == pytest.approx(0.02)
    apart = [r for r in rows if r["arm"] not in ("mae-c4", "mae-c4-p2")]  # mae's run 1 alone: no replicate shared
    assert statistics.replicate_pairs(apart, "mae-c4", "noise-c4") == []
    assert math.isnan(statistics.interval(apart, "mae-c4", "noise-c4", 2, "Dice_mean").value)


def test_a_mask_ratio_arm_is_one_declaration_down_to_its_pretraining_run_s_config(monkeypatch, tmp_path):
    """An arm's own overrides (another mask ratio, another schedule) reach its pretraining runs, after the method's,
    and compose there; its folder is a field of the run, the one its ``output_dir`` names."""
    arm = Arm("mae-60", (Contrast("scratch", "does mae at a 60 % mask help? (mae-60 − scratch)"),), method="mae",
              overrides=("method.mask_ratio=0.6", "optim.schedule=constant"))
    monkeypatch.setitem(ARMS, arm.name, arm)
    assert "mae-60" in arms.choices() and "mae-60" in arms.pretraining_arms()
    [run] = plan_pretraining(tmp_path, dataclasses.replace(SCALES["quick"], pretrain_runs=1), Network("resenc", "tiny"),
                             ["mae-60"], {4: CohortList(tmp_path / "c4", "")}, None, seed=0)
    assert run.run_dir == tmp_path / "pretrain" / "mae-60-c4" and f"output_dir={run.run_dir}" in run.overrides
    cfg = compose_config("pretrain", list(run.overrides))
    assert (cfg.method.name, cfg.method.mask_ratio, cfg.optim.schedule) == ("mae", 0.6, "constant")


def test_an_arm_that_would_add_no_run_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    """A frozen random-init arm declared alone (no method, no labels) is offered by --arms and refused there
    (exit 2, one line, --out untouched), never run as 0 units."""
    monkeypatch.setitem(ARMS, "frozen", Arm("frozen", (Contrast("scratch", "frozen random init − scratch"),)))
    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=9, size=16, seed=1)
    with pytest.raises(SystemExit) as refused:
        study.main(["--data", "msd", "--root", str(labeled), "--out", str(tmp_path / "out"), "--arms", "frozen",
                    "--scale", "quick", "--dry-run"])
    said = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and said.startswith("--arms frozen: ") and len(said.splitlines()) == 1, said
    assert not (tmp_path / "out").exists() and all(ARMS[a].runs for a in ("scratch", "supervised", "noise", "asa"))


def test_two_arms_in_one_factorial_cell_are_not_read_whatever_their_order():
    """asa and an ASA variant share the cell (attentive, no channel): the factorial is refused, and its reading
    (effects, the arm chosen) is the same for --arms in either order; without the variant it reads asa's cell."""
    variant = Arm("asa-p8", method="asa", loss_weighting="attentive", patch=8, power=1.0)
    values = {"mae": .1, "asa": .3, "asa-p8": .6, "mae-coord": .2, "asa-coord": .4}
    record = {"rows": [{"name": name, "metrics": {"ridge/r2_mean": {"value": v}}}
                       for name, v in [*((f"{a}-c4", v) for a, v in values.items()), (probes.RANDOM_ROW, 0.0)]]}
    runs = [Pretraining(f"{a}-c4", a, 4, (), Path(a)) for a in values]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ARMS, variant.name, variant)
        readings_of = [probes.read_probes(record, order, ["ridge/r2_mean"]) for order in (runs, runs[::-1])]
        for rows in readings_of:
            assert probes.factorial_effects(rows) == []
            assert probes.shared_cells(rows) == {"attentive, without the coordinate channel": ["asa", "asa-p8"]}
            assert probes.choose_arm(rows) == "asa-p8"
    rows = [r for r in readings_of[0] if r["arm"] != "asa-p8"]
    assert probes.factorial_effects(rows)[0]["value"] == pytest.approx((.3 + .4 - .1 - .2) / 2)
