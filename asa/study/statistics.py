"""The statistics of a study's scores, beside its report: paired differences of an arm to its reference (same N,
seed and test case), their crossed random-effects CIs (`asa.eval.random_effects.crossed_interval`, the interval the
verdicts read) beside the seed × case bootstrap CIs (`asa.eval.seed_case_bootstrap`), the case-only CI and the
per-seed means, and one summary row per arm and N (`summarize`), which `asa.study.tables` writes and
`asa.study.report` reads."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asa.eval import bootstrap_ci, seed_case_bootstrap
from asa.eval.random_effects import CrossedInterval, crossed_interval, folded_interval

# mean Dice over the --lesion-classes, a score column of its own: every per-class column starts with its metric
# (Dice_<class>, HD95_<class>, NSD_<class>), so no class name (a class may be called "lesion") can write over this one
LESION = "lesion_Dice"


def paired_matrix(scores: Sequence[Mapping[str, Any]], arm: str, reference: str, n: int, key: str, *,
                  like: str | None = None) -> np.ndarray:
    """D [seeds, test cases]: (arm − reference) ``key`` of the runs with the same N, seed and test case
    (seeds in numeric order and cases in sorted order, those ``like``'s runs have when given, else ``arm``'s; NaN where one of the pair
    is missing)."""
    table = {(s["arm"], s["seed"], s["case"]): float(s[key]) for s in scores if int(s["n"]) == n and key in s}
    seeds = sorted({seed for a, seed, _ in table if a == (like or arm)}, key=int)  # a CSV's "10" after its "9"
    cases = sorted({case for a, _, case in table if a == (like or arm)})
    return np.array([[table.get((arm, seed, case), math.nan) - table.get((reference, seed, case), math.nan)
                      for case in cases] for seed in seeds]).reshape(len(seeds), len(cases))


def _blank(value: Any) -> bool:
    """Whether a score row's optional column is empty (missing, "" in a CSV, NaN in a frame)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def draw_repeats(scores: Sequence[Mapping[str, Any]], arm: str, n: int) -> list[int] | None:
    """The repeat of each of ``arm``'s seeds at N (sorted, as `paired_matrix` orders them) when the study
    cross-validated (its score rows carry ``repeat``); None for a fixed test split."""
    mine = [s for s in scores if s["arm"] == arm and int(s["n"]) == n]
    if not mine or any(_blank(s.get("repeat")) for s in mine):
        return None
    return [repeat for _, repeat in sorted({int(s["seed"]): int(s["repeat"]) for s in mine}.items())]


def group_of(row: Mapping[str, Any]) -> str:
    """The arm at its cohort a score row belongs to (its ``group`` column; a row without one: its run's arm)."""
    return str(row.get("group") or row["arm"])


def replicates(scores: Sequence[Mapping[str, Any]], group: str) -> dict[int, str]:
    """Each pretraining replicate of ``group`` (its ``replicate`` column; 0 without one) -> its run (``arm``), in
    replicate order."""
    return dict(sorted({0 if _blank(s.get("replicate")) else int(s["replicate"]): str(s["arm"])
                        for s in reversed(scores) if group_of(s) == group}.items()))  # the first row names it


def runs_of(scores: Sequence[Mapping[str, Any]], group: str) -> list[str]:
    """The runs (their ``arm``) of ``group``, one per pretraining replicate, in replicate order."""
    return list(replicates(scores, group).values())


def replicate_pairs(scores: Sequence[Mapping[str, Any]], arm: str, reference: str) -> list[tuple[str, str]]:
    """(run k of group ``arm``, run k of group ``reference``) for every replicate k both scored, or, for a reference
    of one run (scratch, the positive control: not replicated), (each run of ``arm``, that run). A run of ``arm``
    whose replicate the replicated reference lacks is left out: paired with another replicate it would be read
    against a control matched to another run."""
    arms, refs = replicates(scores, arm), replicates(scores, reference)
    if len(refs) == 1:
        return [(run, *refs.values()) for run in arms.values()]
    return [(run, refs[k]) for k, run in arms.items() if k in refs]


def _replicated(scores: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]], n: int, key: str) -> np.ndarray:
    """D [pretraining runs, seeds, test cases]: `paired_matrix` of each (arm run, reference run) of ``pairs``, on the
    seeds and cases of the first arm run (no pairs: no value, [1, 0, 0])."""
    if not pairs:
        return np.full((1, 0, 0), math.nan)
    return np.stack([paired_matrix(scores, a, r, n, key, like=pairs[0][0]) for a, r in pairs])


def pooled_matrix(scores: Sequence[Mapping[str, Any]], arm: str, reference: str, n: int, key: str) -> np.ndarray:
    """D [seeds, test cases] averaged over group ``arm``'s pretraining runs (`replicate_pairs`)."""
    return _replicated(scores, replicate_pairs(scores, arm, reference), n, key).mean(axis=0)


def interval(scores: Sequence[Mapping[str, Any]], arm: str, reference: str, n: int, key: str, *,
             pooled: bool = True) -> CrossedInterval:
    """The paired difference (arm − reference) of ``key`` at N with the interval its design takes: crossed seeds ×
    test cases (`asa.eval.random_effects.crossed_interval`), or cross-validated draws scoring their folds
    (`asa.eval.random_effects.folded_interval`). ``pooled``: ``arm`` and ``reference`` are groups (an arm at its
    cohort, `group_of`) whose replicated pretraining runs are a further crossed level (run k of the arm against run
    k of a replicated reference, else against its run); else they are two runs."""
    pairs = replicate_pairs(scores, arm, reference) if pooled else [(arm, reference)]
    d = _replicated(scores, pairs, n, key)
    d = d[0] if len(pairs) <= 1 else d  # one run each (or none paired): seeds × cases, no pretraining level
    if pairs and (repeats := draw_repeats(scores, pairs[0][0], n)) is not None:
        return folded_interval(d, repeats)
    return crossed_interval(d, factors=("pretraining", "seed", "case")[-d.ndim:])


def paired_differences(scores: Sequence[Mapping[str, Any]], arm: str, reference: str, n: int, key: str) -> list[float]:
    """Per test case: mean over seeds of (arm − reference) ``key``, pairing runs of the same N, seed and case."""
    return per_seed_differences(paired_matrix(scores, arm, reference, n, key).T)  # a row per case


def case_interval(differences: Sequence[float], *, n_boot: int, seed: int) -> tuple[float, float]:
    """(low, high): the case-only bootstrap CI of the mean paired difference (`asa.eval.bootstrap_ci`;
    NaN without differences)."""
    if not differences:
        return math.nan, math.nan
    est = bootstrap_ci(np.mean, np.asarray(differences, dtype=float), n_resamples=n_boot, seed=seed)
    return est.low, est.high


def per_seed_differences(d: np.ndarray) -> list[float]:
    """Mean paired difference of every seed (labeled draw): the rows of ``d`` [seeds, test cases]."""
    return [float(np.nanmean(row)) for row in np.asarray(d, dtype=float) if not np.isnan(row).all()]


def metric_keys(scores: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """Score columns the table reports: Dice per class and mean, then HD95 and NSD per class and mean when scored."""
    def every(key: str) -> bool:  # the column is in every score row
        return bool(scores) and all(key in s for s in scores)

    return [*(f"Dice_{c}" for c in names), "Dice_mean", *([LESION] if every(LESION) else []),
            *(k for m in ("HD95", "NSD") if every(f"{m}_mean") for k in (*(f"{m}_{c}" for c in names), f"{m}_mean"))]


def delta_prefix(key: str) -> str:
    """Column prefix of the paired difference of ``key``: ``delta`` for the headline Dice_mean, else delta_<key>."""
    return "delta" if key == "Dice_mean" else f"delta_{key}"


def summarize(scores: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str | Mapping[str, str], *,
              n_boot: int = 10000, seed: int = 0) -> list[dict]:
    """One row per (arm, N): every metric (Dice, and HD95 when scored) per class and mean ± sd over seeds
    (of the per-seed test means), the encoder-zeroed mean Dice, and for every metric the paired
    difference to ``reference``: its mean, the crossed random-effects CI (``_re_lo`` / ``_re_hi``,
    `asa.eval.random_effects.crossed_interval`), the seed × case bootstrap CI (`asa.eval.seed_case_bootstrap`),
    the case-only CI (per test case averaged over seeds, :func:`case_interval`) and the per-seed means."""
    rows, keys = [], metric_keys(scores, names)
    for n, arm in itertools.product(sorted({int(s["n"]) for s in scores}), dict.fromkeys(s["arm"] for s in scores)):
        if not (mine := [s for s in scores if s["arm"] == arm and int(s["n"]) == n]):
            continue
        seeds = sorted({s["seed"] for s in mine}, key=int)
        row: dict[str, Any] = {"arm": arm, "n": n, "seeds": len(seeds), "test_cases": len({s["case"] for s in mine})}
        for key in [*keys, "Dice_mean_zeroed"]:
            per_seed = [np.mean([float(s[key]) for s in mine if s["seed"] == seed]) for seed in seeds]
            row[key] = float(np.mean(per_seed))
            row[key + "_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan
        row["encoder_drop"] = row["Dice_mean"] - row["Dice_mean_zeroed"]
        ref = reference.get(arm, arm) if isinstance(reference, Mapping) else reference
        if ref != arm:
            row["reference"] = ref
            for key in keys:
                d, p = paired_matrix(scores, arm, ref, n, key), delta_prefix(key)
                both = seed_case_bootstrap(d, n_resamples=n_boot, seed=seed)
                row[p], row[p + "_lo"], row[p + "_hi"] = both.value, both.low, both.high
                crossed = interval(scores, arm, ref, n, key, pooled=False)  # this run's row
                row[p + "_re_lo"], row[p + "_re_hi"] = crossed.low, crossed.high
                row[p + "_case_lo"], row[p + "_case_hi"] = case_interval(per_seed_differences(d.T),
                                                                         n_boot=n_boot, seed=seed)
                row[p + "_per_seed"] = " ".join(f"{v:+.4f}" for v in per_seed_differences(d))
        rows.append(row)
    return rows
