"""Small labeled sets by paired repeated K-fold cross-validation (asa.study.transfer's folds, asa-study's
labeled_split): every case scored once per repeat by runs that did not see it, N and the validation cases drawn
inside each fold's training part, the positive control nested in each draw, the report's interval and its statement
of the draws. An 18-case set run to its report: the installed asa-study's quick study in tests/study/test_study.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from asa.data import discover
from asa.data.synthetic.demo import write_demo_dataset
from asa.study import readings, report, transfer


@pytest.fixture(scope="module")
def eighteen(tmp_path_factory):
    return write_demo_dataset("msd", tmp_path_factory.mktemp("cv") / "labeled", cases=18, size=16, seed=3)


def test_every_case_is_scored_once_per_repeat_and_n_is_drawn_inside_the_training_part():
    ids = [f"case{i:02d}" for i in range(18)]
    draws = transfer.cv_draws(ids, folds=3, repeats=2, val=2, seed=0)
    assert [(d.repeat, d.fold) for d in draws] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for r in (0, 1):
        tests = [i for d in draws if d.repeat == r for i in d.test]
        assert sorted(tests) == ids  # each case once per repeat
    for d in draws:
        assert len(d.test) == 6 and len(d.val) == 2 and len(d.pool) == 10
        assert not set(d.test) & (set(d.val) | set(d.pool)) and not set(d.val) & set(d.pool)
    assert draws[0].test != draws[3].test  # the repeats cut other folds
    # a rerun with more repeats (study.json's scale.repeats may grow) keeps every draw it had and adds its own
    assert transfer.cv_draws(ids, folds=3, repeats=5, val=2, seed=0)[:6] == draws
    with pytest.raises(SystemExit):
        transfer.cv_draws(ids, folds=1, repeats=1, val=0, seed=0)


def _settings(root: Path, out: Path, control: list[list[str]] | None = None, **kw) -> transfer.Transfer:
    """Scratch and the positive control, whose encoder of draw g trained on ``control[g]`` (default: g's pool)."""
    draws = transfer.cv_draws(sorted(c.id for c in discover("msd", root)), folds=3, repeats=2, val=2, seed=0)
    labeled = tuple((Path(f"/c/supervised-s{g}/checkpoints/last.pt"), tuple(control[g] if control else d.pool))
                    for g, d in enumerate(draws))
    base = dict(out=out, data="msd", model="resenc", device="cpu", steps=20, overrides=("model.size=tiny",), root=root,
                crop=32, test=3, val_cases=2, folds=3, repeats=2, cases=(8,), seeds=tuple(range(6)),
                arms={"scratch": transfer.Tuned(("model.pretrained=null",)),
                      "supervised": transfer.Tuned((), "supervised", labeled=labeled)})
    return transfer.Transfer(**{**base, **kw})


def test_the_runs_of_a_cross_validated_study_score_their_fold_with_their_own_control(eighteen, tmp_path):
    runs, test_ids, _, every = transfer.plan_runs(_settings(eighteen, tmp_path))
    ids = sorted(c.id for c in discover("msd", eighteen))
    assert test_ids == ids == sorted(every) and {r.arm for r in runs} == {"scratch", "supervised"} and len(runs) == 2 * 6
    draws = transfer.cv_draws(ids, folds=3, repeats=2, val=2, seed=0)
    for run in runs:
        draw = draws[run.seed]
        assert (run.repeat, run.fold) == (draw.repeat, draw.fold) and run.test == draw.test
        assert set(run.train) <= set(draw.pool) and len(run.train) == 8 and run.val == draw.val
        pretrained = [o for o in run.overrides if o.startswith("model.pretrained=")]
        if run.arm == "supervised":  # the positive control of its own draw
            assert pretrained == [f"model.pretrained=/c/supervised-s{run.seed}/checkpoints/last.pt"]
        assert run.supervised_trained == ()  # its control trained on its draw's pool, never on its fold
    pairs = {(r.seed, r.train) for r in runs}
    assert len(pairs) == 6  # both arms of a draw train on the same cases; the six draws differ
    with pytest.raises(SystemExit, match="number the 6 draws"):
        transfer.plan_runs(_settings(eighteen, tmp_path, seeds=(6,)))
    with pytest.raises(SystemExit, match="training part leaves 10 cases"):
        transfer.plan_runs(_settings(eighteen, tmp_path, cases=(11,)))


def test_a_cross_validated_run_s_split_names_its_fold_as_test_and_flags_what_its_control_trained_on(eighteen,
                                                                                                      tmp_path):
    """Each run's splits.json: test = the 6 cases of its fold it is scored on (not the 8 others it leaves), the rest
    unused; a positive control whose encoder trained on every case is flagged on each fold it meets."""
    ids = sorted(c.id for c in discover("msd", eighteen))
    s = _settings(eighteen, tmp_path, control=[ids] * 6)
    runs, test, _, every = transfer.plan_runs(s)
    units = transfer.units(s, runs, test, every, "msd")
    for run, unit in zip(runs, units[0::2]):  # each training unit, followed by its scoring unit
        [needed] = unit.inputs
        path, split = needed.path, needed.content
        assert path == run.run_dir / "splits.json" and split["test"] == list(run.test) and len(split["test"]) == 6
        assert sorted([*split["train"], *split["val"], *split["test"], *split["unused"]]) == ids
        assert len(split["unused"]) == 18 - 8 - 2 - 6
        assert split["supervised_trained"] == (list(run.test) if run.arm == "supervised" else [])


def _cv_scores(effect: float) -> list[dict]:
    """Cross-validated scores: 18 cases, 3 folds × 2 repeats, scratch and supervised (+effect, a draw effect)."""
    ids = [f"c{i:02d}" for i in range(18)]
    rows = []
    for g, draw in enumerate(transfer.cv_draws(ids, folds=3, repeats=2, val=2, seed=0)):
        for arm, delta in (("scratch", 0.0), ("supervised", effect + 0.01 * (g % 3 - 1)), ("asa-c4", 0.002 * g)):
            for k, case in enumerate(draw.test):
                dice = 0.5 + 0.01 * int(case[1:]) + delta + 0.003 * ((k * 7 + g) % 5 - 2) * (arm != "scratch")
                rows.append({"arm": arm, "n": 8, "seed": g, "repeat": draw.repeat, "fold": draw.fold,
                             "case": case, "Dice_mean": dice, "NSD_mean": dice})
    return rows


def test_the_report_reads_cross_validated_scores_on_the_interval_of_their_design():
    rows = readings.contrast_rows(_cv_scores(0.08), [4], n_boot=100)
    control = next(r for r in rows if r.arm == "supervised")
    assert control.bar.interval["levels"] == {"draw": 6, "case": 18, "repeat": 2}
    assert [p[0] for p in control.bar.interval["parts"]] == ["draw", "case"] and control.settled.verdict == "helped"
    asa = next(r for r in rows if r.arm == "asa-c4")
    assert asa.estimates["Dice_mean"][0] == pytest.approx(0.005, abs=2e-3) and not math.isnan(asa.bar.mde)
    assert list(asa.bar.mde_more) == ["repeats"] and asa.bar.mde_more["repeats"] < asa.bar.mde  # its repeats alone


def test_a_cross_validated_page_projects_its_mde_to_more_repeats_alone_and_says_why():
    scores = _cv_scores(0.08)
    info = {"classes": [], "pretraining": [{"run": "asa-c4", "arm": "asa", "cohort": 4}], "min_effect": 0.01}
    said = readings.read(scores, info, n_boot=100)
    (line, _) = report.mde_line(said.primary, min_effect=0.01, looks=said.looks)
    more = said.primary.bar.mde_more["repeats"]
    assert f"with twice the repeats of the same folds (4 repeats, 12 draws) {more:.3f}" in line
    assert ("no projection to other folds or more cases is printed: a cross-validated design's draws and cases are "
            "not crossed") in line and "with twice the labeled draws" not in line
    rule = report.family_lines(said)[0]  # how its intervals are formed: parts each at its own t, not one shared t
    assert "the draws', the cases' and" in rule and "each at its own t, in quadrature" in rule
    assert "share one t" not in rule
    one = readings.read([r for r in scores if r["repeat"] == 0], info, n_boot=100)  # one repeat: σ²_case unknown
    (line, _) = report.mde_line(one.primary, min_effect=0.01, looks=one.looks)
    assert one.primary.bar.mde_more is None and "with twice" not in line
    assert "no projection to more draws or more cases is printed" in line
