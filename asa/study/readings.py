"""asa-study's reading rules: the primary and Holm, each contrast's interval, bound and verdict, and the instruments."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asa.eval import seed_case_bootstrap
from asa.study import arms as declared, statistics

KEYS = (("Dice_mean", "mean Dice"), ("NSD_mean", "NSD"))
LESION_KEY = (statistics.LESION, "lesion Dice")  # with --lesion-classes: the mean Dice of those classes
ALPHA = 0.05  # the primary question's CI is 1 − ALPHA; the exploratory questions' family-wise error rate (Holm)
LEVEL = f"{100 * (1 - ALPHA):g} %"
PLUMBING, UNREADABLE = "— (plumbing check)", "not interpretable"
NOT_READ = "— (not read)"  # the bound of a reading that is not interpretable
UNSHOWN = "not interpretable: sensitivity not shown"  # a null without a positive control that moved
NOT_A_TEST = "not a test of the attentive loss"  # asa − mae where asa's weights are near uniform
# the attentive weights' effective share (Σp)² / (n·Σp²) above which they are uniform in all but name (docs/studies.md,
# "ASA's attentive weight where it varies": ≤ 0.8 where the weight varies)
UNIFORM_SHARE = 0.8
INCONCLUSIVE = "inconclusive"  # no effect read, and the bound allows one of the minimum effect
FOUND = 0.1  # the pilot's mean test Dice under which the scratch twin is said not to learn the task


def keys_of(scores: Sequence[Mapping[str, Any]], endpoint: tuple[str, str] = KEYS[0]) -> tuple[tuple[str, str], ...]:
    """The contrasted (key, label)s every score row has: the ``endpoint`` first, mean Dice, NSD, the lesion Dice."""
    others = (*KEYS, LESION_KEY) if scores else KEYS  # no score rows: every column but the lesion Dice
    return tuple((k, label) for k, label in (endpoint, *(o for o in others if o[0] != endpoint[0]))
                 if all(k in r for r in scores))


def endpoint(classes: Sequence[str], lesion_classes: Sequence[str]) -> tuple[str, str]:
    """(column, label) named before training: lesion Dice (named or only class), else mean Dice (dilutes lesions)."""
    if lesion_classes:
        return LESION_KEY[0], f"lesion Dice ({', '.join(lesion_classes)})"
    if len(classes) == 1:
        return KEYS[0][0], f"lesion Dice ({classes[0]})"
    return KEYS[0]


def bound_text(lo90: float, hi90: float, *, min_effect: float) -> str:
    """What a contrast's one-sided 95 % bounds (its 90 % interval: two one-sided tests at ± ``min_effect``) exclude."""
    if math.isnan(lo90) or math.isnan(hi90):
        return "no bound (one labeled draw: the spread between draws is not measured)"
    if -min_effect < lo90 and hi90 < min_effect:
        return f"equivalent within ±{min_effect:g} ({lo90:+.3f} to {hi90:+.3f})"
    if lo90 > 0:
        return f"gains below {lo90:+.3f} excluded"
    if hi90 < 0:
        return f"losses under {-hi90:.3f} excluded"
    if hi90 < min_effect:
        return f"gains above {hi90:+.3f} excluded"
    return f"inconclusive: {lo90:+.3f} to {hi90:+.3f}"


def negative_small(row: Mapping[str, Any], *, min_effect: float) -> bool:
    """Whether a negative control is shown small: its one-sided 95 % upper bound under ``min_effect``."""
    return row.get("bound90", [math.nan, math.nan])[1] < min_effect  # NaN (no bound): not shown


def control_faults(contrasts: Sequence[Mapping[str, Any]], *, min_effect: float) -> dict[str, dict[int, str]]:
    """Per N, why nulls (no positive control moved) and gains over scratch (no negative shown small) cannot be read."""
    out: dict[str, dict[int, str]] = {"nulls": {}, "gains": {}}
    for n in sorted({r["n"] for r in contrasts}):
        positive, negative = ([r for r in contrasts if (r["kind"], r["n"]) == (k, n)] for k in ("positive", "negative"))
        if not (positive and all(r["verdict"] == "helped" for r in positive)):
            out["nulls"][n] = "the positive control did not move" if positive else "no positive control ran"
        if not (negative and all(negative_small(r, min_effect=min_effect) for r in negative)):
            out["gains"][n] = (("the negative control is not shown small" if negative else "no negative control ran")
                               + ": a gain over scratch may be the recipe's")
    return out


def read_instruments(contrasts: Sequence[dict[str, Any]], runs: Sequence[Mapping[str, Any]],
                     faults: Mapping[str, Mapping[int, str]]) -> None:
    """In place, after `read_family`: the control ``faults``, asa − mae with near-uniform weights, the plateau flags."""
    def of(group: str) -> list[Mapping[str, Any]]:  # the pretraining runs of an arm at its cohort
        return [run for run in runs if declared.label(run["arm"], run["cohort"]) == group]

    for r in [c for c in contrasts if c["kind"] == "question"]:
        # either side's pretraining runs unfinished at their export (levelled or unchecked: no flag)
        r["flags"] = [unfinished(run) for group in (r["arm"], r["reference"]) for run in of(group)
                      if run.get("plateau") is False]
        if r["verdict"] == "no difference" and r["n"] in faults["nulls"]:
            r["verdict"], r["why"] = UNSHOWN, faults["nulls"][r["n"]]
        elif (r["verdict"] == "helped" and declared.scratch_twin(r["reference_arm"])
              and not declared.scratch_twin(r["encoder_arm"]) and r["n"] in faults["gains"]):
            r["verdict"], r["why"] = UNREADABLE, faults["gains"][r["n"]]
        shares = [float(run.get("weights_share", math.nan)) for run in of(r["arm"])]
        share = float(np.mean(shares)) if shares else math.nan  # over the arm's pretraining runs
        if declared.attentive_over_uniform(r["encoder_arm"], r["reference_arm"]) and share > UNIFORM_SHARE:
            r["verdict"], r["why"] = NOT_A_TEST, (f"the attentive weights' effective share {share:.2f} > "
                                                  f"{UNIFORM_SHARE}: asa's loss is mae's in all but name")


def unfinished(run: Mapping[str, Any]) -> str:
    """Why a pretraining run's export is flagged (`asa.study.readout.loss_plateau`): exported in the first eighth of
    its summed lr, or its held-out loss still falling over the last quarter of the summed lr up to its export."""
    if run.get("early"):
        return (f"{run['run']} unfinished: exported at {run['export_progress']:.0%} of its summed lr, in its first "
                "eighth")
    return (f"{run['run']} unfinished: its held-out loss still fell {run['loss_drop']:.1%} over the last quarter of "
            "the summed lr up to its export")


def verdict(low: float, high: float, value: float = math.nan, *, min_effect: float = 0.0) -> str:
    """What a paired difference's CI says: helped / hurt (off 0, and ``value`` at least ``min_effect``) or not."""
    if math.isnan(low) or math.isnan(high):
        return "not measured"
    if not (low > 0 or high < 0) or (not math.isnan(value) and abs(value) < min_effect):
        return "no difference"
    return "helped" if low > 0 else "hurt"


def settle(ci: Sequence[float], bound90: Sequence[float], *, min_effect: float) -> tuple[str, str | None]:
    """(verdict, why) that both the CI and the one-sided bounds allow: "no difference" only where the bounds exclude
    a gain and a loss of ``min_effect`` (why: the CI holds 0, or its estimate is under the minimum effect); a CI
    that holds 0, or an estimate under the minimum whose bound reaches it, reads inconclusive."""
    v, lo, hi = ci
    said = verdict(lo, hi, v, min_effect=min_effect)
    if said != "no difference":
        return said, None
    if -min_effect < bound90[0] and bound90[1] < min_effect:
        return said, "minimum effect" if lo > 0 or hi < 0 else "ci"
    return INCONCLUSIVE, None


def holm(p: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values in the given order (NaN stays NaN, not counted in m)."""
    order = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    out, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        out[i] = running = max(running, min(1.0, (len(order) - rank) * p[i]))  # non-decreasing in p's order
    return out


def _ci(est: Any) -> list[float]:
    """[value, low, high] of an interval or a bootstrap."""
    return [est.value, est.low, est.high]


def _endpoint_bar(row: dict[str, Any], est: Any, alpha: float) -> None:
    """In place: the endpoint's p, its one-sided bounds at ``alpha`` (``bound90``: the 1 − 2·alpha interval, two
    one-sided tests), its interval and its MDE at ``alpha`` (and with twice the seeds, cases, pretraining runs)."""
    row.update(p=est.p, bound90=list(est.bounds(1 - 2 * alpha)), interval=est.to_dict(), mde=est.mde(alpha=alpha))
    if est.parts and "seed" in est.levels:
        levels = ("seed", "case", "pretraining")[:3 if "pretraining" in est.levels else 2]
        row["mde_more"] = {name: est.mde(alpha=alpha, levels={level: 2 * est.levels[level]})
                           for name, level in zip(("seeds", "cases", "pretraining runs"), levels)}


def contrast_rows(scores: Sequence[Mapping[str, Any]], cohorts: Sequence[int], encoders: Sequence[str] = (), *,
                  n_boot: int, min_effect: float = 0.01, endpoint: tuple[str, str] = KEYS[0]) -> list[dict[str, Any]]:
    """Each declared contrast with both arms scored, per N: paired Δs (crossed CI, bootstrap), p, MDE and verdict."""
    groups = {statistics.group_of(r) for r in scores}
    key, rows = endpoint[0], []
    for (arm, a_cohort), (ref, r_cohort), question, kind in declared.contrasts(cohorts, encoders):
        group, reference = declared.label(arm, a_cohort), declared.label(ref, r_cohort)
        if group == reference or not {group, reference} <= groups:
            continue
        for n in sorted({int(r["n"]) for r in scores}):
            row: dict[str, Any] = {"question": question, "kind": kind, "arm": group, "reference": reference,
                                   "encoder_arm": arm, "reference_arm": ref, "n": n,
                                   "endpoint": key, "endpoint_label": endpoint[1], "bootstrap": {}}
            for k, _ in keys_of(scores, endpoint):
                d = statistics.pooled_matrix(scores, group, reference, n, k)  # the arm's pretraining runs averaged
                est = statistics.interval(scores, group, reference, n, k)
                row[k], row["bootstrap"][k] = _ci(est), _ci(seed_case_bootstrap(d, n_resamples=n_boot))
                if k == key:
                    _endpoint_bar(row, est, ALPHA)
            row["bound"] = bound_text(*row["bound90"], min_effect=min_effect)
            row["verdict"], row["why"] = settle(row[key], row["bound90"], min_effect=min_effect)
            rows.append(row)
    return rows


def class_rows(scores: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per arm (its pretraining runs pooled) and N, each class's paired Δ Dice to its twin, [value, low, high]."""
    groups = {statistics.group_of(r): str(r.get("encoder_arm") or r["arm"]) for r in scores}
    pairs = [(arm, declared.twin_of(of)) for arm, of in groups.items()]
    return [{"arm": arm, "reference": ref, "n": n,
             **{f"Dice_{c}": _ci(statistics.interval(scores, arm, ref, n, f"Dice_{c}")) for c in classes}}
            for n in sorted({int(r["n"]) for r in scores} if classes else ()) for arm, ref in pairs
            if arm != ref and ref in groups]


def read_family(rows: Sequence[dict[str, Any]], encoders: Sequence[str] = ()) -> dict[str, Any] | None:
    """Roles and readings, in place: the controls and the primary at 95 %, the rest on Holm; returns the primary."""
    questions = [r for r in rows if r["kind"] == "question"]
    for r in rows:
        r["role"] = "control" if r["kind"] != "question" else "exploratory"
    smallest = min((r["n"] for r in questions), default=None)
    primary = next((r for name in [*declared.primary_order(), *encoders[:1]] for r in questions if r["encoder_arm"]
                    == name and r["reference_arm"] == declared.twin_of(name) and r["n"] == smallest), None)
    if primary is not None:
        primary["role"] = "primary"
    others = [r for r in questions if r["role"] == "exploratory"]
    for r, adjusted in zip(others, holm([r["p"] for r in others])):
        r["p_holm"] = adjusted
        if r["verdict"] in ("helped", "hurt") and not adjusted < ALPHA:  # off 0 alone, not across the family
            r["verdict"], r["why"] = INCONCLUSIVE, "holm"
    return primary


def instrument_faults(pilot: Mapping[str, Any], scores: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The instrument that fails every reading, so every Δ is noise: a scratch twin that learns nothing in the pilot,
    or a transfer stage whose every scored Dice is 0 (no arm segments the test cases)."""
    test = pilot.get("test") or {}
    mean = float(np.mean(list(test.values()))) if test else math.nan
    # its mean test Dice under FOUND, or its validation Dice (or lesion Dice) under the study's floor
    if mean < FOUND or pilot.get("learned") is False:
        best = [f"{label} {pilot[key]:.3f}" for key, label in (("best_dice", "best validation Dice"),
                                                               ("best_lesion_dice", "best lesion Dice"))
                if not math.isnan(float(pilot.get(key, math.nan)))]
        why = (f"the pilot's mean test Dice {mean:.3f} < {FOUND}" if mean < FOUND else "the pilot did not learn"
               + (f": {', '.join(best)}, under {pilot['floor']}" if best and "floor" in pilot else ""))
        return [f"the scratch twin does not learn the task ({why}), so every difference is noise."]
    if scores and all(float(r["Dice_mean"]) <= 0 for r in scores):
        return [f"every Dice the transfer stage scored is 0 ({len(scores)} scores of every arm): no arm segments the "
                "test cases, so every difference is noise."]
    return []


@dataclasses.dataclass(frozen=True)
class Looks:
    """The looks at the scores the primary question is read over (`asa.study.design` keeps them in design.json):
    Bonferroni, the primary read at ``ALPHA`` / `count`, the looks planned or taken, whichever are more: a study
    extended after a look and read again at ``ALPHA`` would cross the bar by chance more often than ``ALPHA``.

    Args:
        taken: the looks taken, this reading's included.
        planned: the looks the registered design planned (--looks).
        extended: per extension after a look, "<that look's time>: <what changed>".
    """

    taken: int = 1
    planned: int = 1
    extended: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """The looks the primary's error rate is shared over."""
        return max(self.taken, self.planned)

    @property
    def alpha(self) -> float:
        """The primary's two-sided error rate at this look."""
        return ALPHA / self.count

    @property
    def level(self) -> str:
        """The primary's confidence as the page says it, "97.5 %" over 2 looks."""
        return f"{100 * (1 - self.alpha):.4g} %"


def read_over_looks(row: dict[str, Any], scores: Sequence[Mapping[str, Any]], looks: Looks, *,
                    min_effect: float) -> None:
    """In place: the primary ``row`` read over ``looks`` (Bonferroni): its CI at 1 − alpha/K, its bounds one-sided
    at alpha/K, its MDE at alpha/K and the verdict both allow; ``looks`` and ``level`` say so."""
    key = row["endpoint"]
    est = statistics.interval(scores, row["arm"], row["reference"], row["n"], key)
    row[key] = [est.value, *est.bounds(1 - looks.alpha)]
    _endpoint_bar(row, est, looks.alpha)
    row["bound"] = bound_text(*row["bound90"], min_effect=min_effect)
    row["verdict"], row["why"] = settle(row[key], row["bound90"], min_effect=min_effect)
    row["looks"], row["level"] = looks.count, looks.level


@dataclasses.dataclass(frozen=True)
class Reading:
    """A study's reading, computed once from its score rows (`read`); `asa.study.report` renders it, sets nothing.

    Args:
        endpoint: (score column, label) of the primary endpoint.
        keys: the contrasted (column, label)s, the endpoint first.
        contrasts: every contrast per N (contrasts.json): estimates, intervals, bound, MDE, role and verdict.
        primary: the primary question's row (None: no pretrained arm against its twin).
        faults: the instrument faults that leave no verdict (`instrument_faults`).
        controls: per N, why nulls and gains over scratch cannot be read (`control_faults`).
        plumbing: the quick scale, where nothing is read.
        min_effect: the smallest Δ read as an effect.
        classes: per arm and N, each class's Δ Dice to its twin (`class_rows`).
        looks: the looks the primary is read over.
    """

    endpoint: tuple[str, str]
    keys: tuple[tuple[str, str], ...]
    contrasts: list[dict[str, Any]]
    primary: dict[str, Any] | None
    faults: tuple[str, ...]
    controls: Mapping[str, Mapping[int, str]]
    plumbing: bool
    min_effect: float
    classes: list[dict[str, Any]]
    looks: Looks = Looks()

    @property
    def interpretable(self) -> bool:
        """Whether a line may claim a verdict, a sensitivity, an equivalence or a detectable effect."""
        return not (self.plumbing or self.faults)

    @property
    def mde(self) -> float:
        """The primary's minimum detectable effect where it may be said, else NaN."""
        p = self.primary
        return p["mde"] if p is not None and p["verdict"] not in (PLUMBING, UNREADABLE, UNSHOWN) else math.nan


def read(scores: Sequence[Mapping[str, Any]], info: Mapping[str, Any], *, n_boot: int,
         looks: Looks = Looks()) -> Reading:
    """The reading of a study's score rows, with its record ``info`` (classes, endpoint, pilot, pretraining runs),
    the primary over the ``looks`` taken."""
    classes = list(info.get("classes", []))
    key = tuple(info.get("endpoint") or endpoint(classes, list(info.get("lesion_classes") or [])))
    runs = info.get("pretraining", [])
    cohorts = sorted({int(r["cohort"]) for r in runs if not declared.ARMS[r["arm"]].noise})
    encoders = [k.split("=", 1)[0] for k in info.get("encoders", [])]
    min_effect = float(info.get("min_effect", 0.01))
    contrasts = contrast_rows(scores, cohorts, encoders, n_boot=n_boot, min_effect=min_effect, endpoint=key)
    primary = read_family(contrasts, encoders)
    if primary is not None and looks.count > 1:
        read_over_looks(primary, scores, looks, min_effect=min_effect)
    controls = control_faults(contrasts, min_effect=min_effect)
    plumbing = info.get("scale_name") == "quick"
    faults = tuple(instrument_faults(info.get("pilot") or {}, scores))
    if not (plumbing or faults):
        read_instruments(contrasts, runs, controls)
    for r in contrasts:
        if plumbing or faults:  # no verdict at all: the numbers stay, the verbs go
            r["verdict"], r["why"] = (PLUMBING if plumbing else UNREADABLE), None
        if r["verdict"] in (PLUMBING, UNREADABLE, UNSHOWN):  # a reading not interpretable claims no bound either
            r["bound"] = NOT_READ
    return Reading(key, keys_of(scores, key), contrasts, primary, faults, controls, plumbing, min_effect,
                   class_rows(scores, classes), looks)
