"""Bootstrap intervals that resample subjects with all their sessions (the cluster bootstrap)."""
from __future__ import annotations

import numpy as np
import pytest

from asa.eval import auroc, bootstrap_ci, classification_summary, mae, regression_summary


def test_subject_bootstrap_of_identical_sessions_is_the_bootstrap_of_the_subjects():
    rng = np.random.default_rng(0)
    per_subject = rng.normal(size=12)
    subjects = np.array([f"sub-{i:02d}" for i in range(12)])  # sorted: the order the subjects are drawn in
    sessions = np.repeat(per_subject, 3)  # every subject's 3 sessions identical
    groups = np.repeat(subjects, 3)
    cluster = bootstrap_ci(np.mean, sessions, n_resamples=300, seed=4, groups=groups)
    alone = bootstrap_ci(np.mean, per_subject, n_resamples=300, seed=4)
    assert (cluster.low, cluster.high, cluster.value) == pytest.approx((alone.low, alone.high, alone.value), abs=1e-12)
    cases = bootstrap_ci(np.mean, sessions, n_resamples=300, seed=4)  # sessions taken as independent cases
    assert cases.high - cases.low < 0.75 * (cluster.high - cluster.low)  # about 1/sqrt(3) as wide
    # a subject per case is the case bootstrap, draw for draw
    assert bootstrap_ci(np.mean, per_subject, n_resamples=300, seed=4, groups=subjects) == alone
    # with strata (a class per subject) the subjects are drawn within their class: counts kept
    y = np.repeat(np.arange(12) % 2, 3)
    counts = bootstrap_ci(lambda t: float(t.sum()), y, n_resamples=50, strata=y, groups=groups)
    assert counts.low == counts.high == 18.0
    auc = bootstrap_ci(auroc, y, sessions, n_resamples=100, strata=y, groups=groups)
    alone_auc = bootstrap_ci(auroc, np.arange(12) % 2, per_subject, n_resamples=100, strata=np.arange(12) % 2)
    assert (auc.low, auc.high) == pytest.approx((alone_auc.low, alone_auc.high))
    with pytest.raises(ValueError, match="one entry \\(a subject\\) per case"):
        bootstrap_ci(np.mean, sessions, groups=groups[:5])


def test_summaries_resample_subjects_when_given():
    rng = np.random.default_rng(3)
    subjects = np.repeat([f"s{i}" for i in range(15)], 2)
    age = np.repeat(rng.uniform(55, 90, 15), 2)
    guess = age + np.repeat(rng.normal(0, 5, 15), 2)
    by_subject = regression_summary(age, guess, n_resamples=100, groups=subjects)
    assert by_subject["bootstrap"]["resampled"] == "subjects"
    assert by_subject["metrics"]["mae"]["ci_low"] == pytest.approx(
        bootstrap_ci(mae, age, guess, n_resamples=100, groups=subjects).low)
    assert regression_summary(age, guess, n_resamples=100)["bootstrap"]["resampled"] == "cases"
    y = np.repeat(np.arange(15) % 3, 2)
    out = classification_summary(y, np.eye(3)[y] * 0.5 + 0.5 / 3, n_resamples=20, groups=subjects)
    assert out["bootstrap"]["resampled"] == "subjects, within each true class"
    with pytest.raises(ValueError, match="one subject per case \\(30\\), got 3"):
        regression_summary(age, guess, groups=["a", "b", "c"])


def test_case_summary_resamples_the_subjects_of_the_cases():
    from asa.data import Targets
    from asa.api.tasks.case.outputs import case_summary

    rng = np.random.default_rng(1)
    ids = [f"sub-{i}_ses-{j}" for i in range(8) for j in range(3)]
    age = {c: float(60 + 3 * int(c[4]) + rng.normal()) for c in ids}
    predictions = {c: {"case_id": c, "prediction": f"{age[c] + rng.normal(0, 4):.6g}"} for c in ids}
    targets = Targets("continuous", (), age, source="participants.tsv", column="age")
    groups = {c: c.split("_")[0] for c in ids[:-1]}  # the last case has no subject: its own
    out = case_summary(predictions, targets, n_resamples=100, seed=2, groups=groups)
    assert out["bootstrap"]["resampled"] == "subjects"
    subjects = [groups.get(c, f"case:{c}") for c in out["cases"]]
    truth = [age[c] for c in out["cases"]]
    pred = [float(predictions[c]["prediction"]) for c in out["cases"]]
    assert out["metrics"]["mae"] == regression_summary(truth, pred, n_resamples=100, seed=2,
                                                       groups=subjects)["metrics"]["mae"]
    assert case_summary(predictions, targets, n_resamples=10)["bootstrap"]["resampled"] == "cases"


def test_bootstrap_indices_draw_whole_subjects():
    from asa.eval import bootstrap_indices

    groups = np.array(["b", "a", "b", "c", "a", "b"])  # subjects of 2, 3 and 1 sessions, interleaved
    for idx in bootstrap_indices(6, n_resamples=50, seed=1, groups=groups):
        drawn = groups[idx]
        for s, size in (("a", 2), ("b", 3), ("c", 1)):
            assert (drawn == s).sum() % size == 0  # a subject comes with all its sessions or not at all
        assert sum((drawn == s).sum() // size for s, size in (("a", 2), ("b", 3), ("c", 1))) == 3  # 3 subjects drawn
    plain = list(bootstrap_indices(6, n_resamples=3, seed=1))
    rng = np.random.default_rng(1)
    assert all(np.array_equal(p, rng.integers(0, 6, size=6)) for p in plain)  # cases: the documented draws
    with pytest.raises(ValueError, match="groups must have one entry"):
        bootstrap_indices(6, n_resamples=0, groups=groups[:2])
