"""asa-study's reading rules: each contrast measured once, then judged by one ordered list of rules (`RULES`: the
first that applies gives its verdict); the primary and Holm, the controls, the instruments and the probes."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from asa.eval import seed_case_bootstrap
from asa.study import arms as declared, statistics

KEYS = (("Dice_mean", "mean Dice"), ("NSD_mean", "NSD"))
LESION_KEY = (statistics.LESION, "lesion Dice")  # with --lesion-classes: the mean Dice of those classes
ALPHA = 0.05  # the primary question's CI is 1 − ALPHA; the exploratory questions' family-wise error rate (Holm)
LEVEL = f"{100 * (1 - ALPHA):g} %"
NOT_READ = "— (not read)"  # the bound of a reading that is not interpretable
# the attentive weights' effective share (Σp)² / (n·Σp²) above which they are uniform in all but name (docs/studies.md,
# "ASA's attentive weight where it varies": ≤ 0.8 where the weight varies)
UNIFORM_SHARE = 0.8
FOUND = 0.1  # the pilot's mean test Dice under which the scratch twin is said not to learn the task
RANDOM_ROW = "random-init"  # the probe row of the random-init twin (asa-probe's ``random`` entry)
RECIPE = ": a gain over scratch may be the recipe's"
# the rise tolerance of a pretraining record before each run kept its own: the fine-tuning budget check's then
# (asa.study.tables.PLATEAU_TOL), kept here so that the reading sits below the page's tables
OLDER_TOL = 0.05


class Verdict(str, enum.Enum):
    """A contrast's verdict, as contrasts.json and the page write it."""

    HELPED = "helped"
    HURT = "hurt"
    NO_DIFFERENCE = "no difference"
    INCONCLUSIVE = "inconclusive"  # no effect read, and the bound allows one of the minimum effect
    NOT_MEASURED = "not measured"  # no interval
    PLUMBING = "— (plumbing check)"  # the quick scale: nothing is read
    UNREADABLE = "not interpretable"  # a failed instrument, or a gain over scratch no negative control bounds
    UNSHOWN = "not interpretable: sensitivity not shown"  # a null without a positive control that moved
    NOT_A_TEST = "not a test of the attentive loss"  # asa − mae where asa's weights are near uniform

    def __str__(self) -> str:
        return self.value


NOT_INTERPRETABLE = (Verdict.PLUMBING, Verdict.UNREADABLE, Verdict.UNSHOWN)  # claim no bound


def keys_of(scores: Sequence[Mapping[str, Any]], endpoint: tuple[str, str] = KEYS[0]) -> tuple[tuple[str, str], ...]:
    """The contrasted (key, label)s every score row has: the ``endpoint`` first, mean Dice, NSD, the lesion Dice."""
    others = [*KEYS, LESION_KEY]
    if not scores:  # no score rows: every column but the lesion Dice
        others = list(KEYS)
    named = [endpoint, *(o for o in others if o[0] != endpoint[0])]
    return tuple((k, label) for k, label in named if all(k in r for r in scores))


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




def shown_small(bound90: Sequence[float], *, min_effect: float) -> bool:
    """Whether a negative control is shown small: its one-sided 95 % upper bound under ``min_effect`` (NaN: not)."""
    return bound90[1] < min_effect


def rising(run: Mapping[str, Any]) -> bool:
    """Whether a pretraining run's held-out loss at its export stands above its lowest level up to it (`loss_rise`,
    `asa.study.readout.loss_plateau`): by its own tolerance or more (older records: the fine-tuning budget check's;
    NaN, a short run: not rising)."""
    return run.get("loss_rise", 0.0) >= run.get("tol", OLDER_TOL)


def flagged(run: Mapping[str, Any]) -> bool:
    """Whether a pretraining run's export is flagged (`unfinished` says why): every run the plateau check did not read
    as levelled, those it could not read among them (a check that cannot read a run does not pass it)."""
    return run.get("plateau") is not True


def unfinished(run: Mapping[str, Any]) -> str:
    """Why a pretraining run's export is flagged (`asa.study.readout.loss_plateau`): exported in the first eighth of
    its summed lr, its held-out loss still falling over the last quarter of the summed lr up to its export, or too
    few held-out rounds up to its export for the check to read."""
    if run.get("early"):
        return (f"{run['run']} unfinished: exported at {run['export_progress']:.0%} of its summed lr, in its first "
                "eighth")
    if run.get("plateau") is None:
        return (f"{run['run']} not checked: fewer than 4 held-out rounds up to its export, too few to read whether its "
                "loss still fell there")
    return (f"{run['run']} unfinished: its held-out loss still fell {run['loss_drop']:.1%} over the last quarter of "
            "the summed lr up to its export")


def verdict(low: float, high: float, value: float = math.nan, *, min_effect: float = 0.0) -> Verdict:
    """What a paired difference's CI says: helped / hurt (off 0, and ``value`` at least ``min_effect``) or not."""
    if math.isnan(low) or math.isnan(high):
        return Verdict.NOT_MEASURED
    if not (low > 0 or high < 0):
        return Verdict.NO_DIFFERENCE
    if not math.isnan(value) and abs(value) < min_effect:
        return Verdict.NO_DIFFERENCE
    if low > 0:
        return Verdict.HELPED
    return Verdict.HURT


@dataclasses.dataclass(frozen=True)
class Judgment:
    """A verdict and why it was reached (None: the verdict says it)."""

    verdict: Verdict
    why: str | None = None


def settle(ci: Sequence[float], bound90: Sequence[float], *, min_effect: float) -> Judgment:
    """What both the CI and the one-sided bounds allow: "no difference" only where the bounds exclude a gain and a
    loss of ``min_effect`` (why: the CI holds 0, or its estimate is under the minimum effect); a CI that holds 0, or
    an estimate under the minimum whose bound reaches it, reads inconclusive."""
    v, lo, hi = ci
    said = verdict(lo, hi, v, min_effect=min_effect)
    if said != Verdict.NO_DIFFERENCE:
        return Judgment(said)
    if not (-min_effect < bound90[0] and bound90[1] < min_effect):
        return Judgment(Verdict.INCONCLUSIVE)
    if lo > 0 or hi < 0:
        return Judgment(said, "minimum effect")
    return Judgment(said, "ci")


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


@dataclasses.dataclass(frozen=True)
class Bar:
    """The endpoint's bar at a two-sided error rate alpha.

    Args:
        p: the interval's two-sided p.
        bound90: its one-sided bounds at alpha (the 1 − 2·alpha interval: two one-sided tests).
        interval: the interval's record (`CrossedInterval.to_dict`).
        mde: its minimum detectable effect at alpha.
        mde_more: the MDE with twice the "seeds", "cases" (and "pretraining runs"), or cross-validated twice the
            "repeats"; None: neither.
    """

    p: float
    bound90: list[float]
    interval: dict[str, Any]
    mde: float
    mde_more: dict[str, float] | None


def endpoint_bar(est: Any, alpha: float) -> Bar:
    """The endpoint's `Bar` of its crossed interval ``est`` at ``alpha``. Its MDE is the observed interval's; twice a
    factor's levels scales it by the ratio of the two designs' MDEs projected from the same variance components
    (`CrossedInterval.projected`), so a larger design prints no larger a variance than the study's own (the observed
    mean squares and the components' expected ones differ where a component is cut off at 0); its MDE can still be
    larger where a part that grows has fewer df than the one that shrinks (docs/studies.md). A cross-validated design
    doubles its repeats alone (from 2), the only factor its parts project."""
    base, more = est.mde(alpha=alpha), None
    if "seed" in est.levels:  # crossed: each factor
        factors = {"seeds": "seed", "cases": "case", "pretraining runs": "pretraining"}
    elif est.levels.get("repeat", 0) >= 2:  # cross-validated: its repeats alone
        factors = {"repeats": "repeat"}
    else:
        factors = {}
    factors = {name: level for name, level in factors.items() if level in est.levels}
    if est.parts and factors:
        here = est.mde(alpha=alpha, levels=est.levels)
        more = {}
        for name, level in factors.items():
            projected = est.mde(alpha=alpha, levels={level: 2 * est.levels[level]})
            more[name] = base * projected / here if here > 0 else projected
    return Bar(est.p, list(est.bounds(1 - 2 * alpha)), est.to_dict(), base, more)


@dataclasses.dataclass(frozen=True)
class Measured:
    """A declared contrast at one N, measured: its Δs, the endpoint's bar, and what they alone say.

    Args:
        question: the question it answers, as the page asks it.
        kind: "question", or "positive" / "negative" for a control.
        arm: its group, arm − ``reference`` (``<arm>-c<cohort>``).
        reference: the group it is compared with.
        encoder_arm: ``arm``'s declared arm.
        reference_arm: ``reference``'s declared arm.
        n: labeled cases.
        endpoint: (score column, label) read.
        estimates: per contrasted column, the endpoint first, [value, low, high] of its crossed interval (95 %; the
            endpoint's at the bar's level).
        bootstrap: per column, [value, low, high] of the seed × case bootstrap.
        bar: the endpoint's bar.
        settled: what the endpoint's CI and bounds alone say (`settle`).
    """

    question: str
    kind: str
    arm: str
    reference: str
    encoder_arm: str
    reference_arm: str
    n: int
    endpoint: tuple[str, str]
    estimates: dict[str, list[float]]
    bootstrap: dict[str, list[float]]
    bar: Bar
    settled: Judgment


def contrast_rows(scores: Sequence[Mapping[str, Any]], cohorts: Sequence[int], encoders: Sequence[str] = (), *,
                  n_boot: int, min_effect: float = 0.01, endpoint: tuple[str, str] = KEYS[0]) -> list[Measured]:
    """Each declared contrast with both arms scored, per N: paired Δs (crossed CI, bootstrap), the endpoint's bar at
    ``ALPHA`` and what they say."""
    groups = {statistics.group_of(r) for r in scores}
    key, rows = endpoint[0], []
    for (arm, a_cohort), (ref, r_cohort), question, kind in declared.contrasts(cohorts, encoders):
        group, reference = declared.label(arm, a_cohort), declared.label(ref, r_cohort)
        if group == reference or not {group, reference} <= groups:
            continue
        for n in sorted({int(r["n"]) for r in scores}):
            estimates, bootstrap, bar = {}, {}, None
            for k, _ in keys_of(scores, endpoint):
                d = statistics.pooled_matrix(scores, group, reference, n, k)  # the arm's pretraining runs averaged
                est = statistics.interval(scores, group, reference, n, k)
                estimates[k], bootstrap[k] = _ci(est), _ci(seed_case_bootstrap(d, n_resamples=n_boot))
                if k == key:
                    bar = endpoint_bar(est, ALPHA)
            settled = settle(estimates[key], bar.bound90, min_effect=min_effect)
            rows.append(Measured(question, kind, group, reference, arm, ref, n, tuple(endpoint), estimates, bootstrap,
                                 bar, settled))
    return rows


def over_looks(row: Measured, scores: Sequence[Mapping[str, Any]], looks: Looks, *, min_effect: float) -> Measured:
    """The primary ``row`` measured again over ``looks`` (Bonferroni): its CI at 1 − alpha/K, its bounds one-sided at
    alpha/K, its MDE at alpha/K and what both allow."""
    key = row.endpoint[0]
    est = statistics.interval(scores, row.arm, row.reference, row.n, key)
    ci = [est.value, *est.bounds(1 - looks.alpha)]
    bar = endpoint_bar(est, looks.alpha)
    return dataclasses.replace(row, estimates={**row.estimates, key: ci}, bar=bar,
                               settled=settle(ci, bar.bound90, min_effect=min_effect))


@dataclasses.dataclass(frozen=True)
class ClassRow:
    """An arm's paired Δ Dice to its twin at N, per class: [value, low, high] of its crossed interval."""

    arm: str
    reference: str
    n: int
    dice: dict[str, list[float]]


def class_rows(scores: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> list[ClassRow]:
    """Per arm (its pretraining runs pooled) and N, each class's paired Δ Dice to its twin."""
    if not classes:
        return []
    groups = {statistics.group_of(r): str(r.get("encoder_arm") or r["arm"]) for r in scores}
    rows = []
    for n in sorted({int(r["n"]) for r in scores}):
        for arm, of in groups.items():
            ref = declared.twin_of(of)
            if arm == ref or ref not in groups:
                continue
            rows.append(ClassRow(arm, ref, n, {c: _ci(statistics.interval(scores, arm, ref, n, f"Dice_{c}"))
                                               for c in classes}))
    return rows


@dataclasses.dataclass(frozen=True)
class Family:
    """Each contrast's role, and Holm's p across the exploratory questions.

    Args:
        roles: per contrast, "primary" (read at 95 % alone), "exploratory" (read on Holm's p) or "control".
        p_holm: per contrast, an exploratory question's Holm p, else None.
    """

    roles: tuple[str, ...]
    p_holm: tuple[float | None, ...]

    @property
    def primary(self) -> int | None:
        """The primary question's place among the contrasts (None: no pretrained arm against its twin)."""
        if "primary" in self.roles:
            return self.roles.index("primary")
        return None


def family(rows: Sequence[Measured], encoders: Sequence[str] = ()) -> Family:
    """The primary (the first declared primary arm, then the first encoder, against its twin at the smallest N),
    the other questions exploratory with Holm's p across them, the controls."""
    questions = [i for i, r in enumerate(rows) if r.kind == "question"]
    primary = None
    if questions:
        smallest = min(rows[i].n for i in questions)
        for name in [*declared.primary_order(), *encoders[:1]]:
            named = [i for i in questions if rows[i].encoder_arm == name and rows[i].n == smallest
                     and rows[i].reference_arm == declared.twin_of(name)]
            if named:
                primary = named[0]
                break
    roles = []
    for i, r in enumerate(rows):
        if r.kind != "question":
            roles.append("control")
        elif i == primary:
            roles.append("primary")
        else:
            roles.append("exploratory")
    exploratory = [i for i, role in enumerate(roles) if role == "exploratory"]
    adjusted = dict(zip(exploratory, holm([rows[i].bar.p for i in exploratory])))
    return Family(tuple(roles), tuple(adjusted.get(i) for i in range(len(rows))))


@dataclasses.dataclass(frozen=True)
class Controls:
    """Per N, why nulls (no positive control moved) and gains over scratch (no negative shown small) cannot be read."""

    nulls: dict[int, str]
    gains: dict[int, str]


def control_faults(rows: Sequence[Measured], *, min_effect: float) -> Controls:
    """The `Controls` the positive and negative controls among ``rows`` leave, per N."""
    nulls, gains = {}, {}
    for n in sorted({r.n for r in rows}):
        positive = [r for r in rows if r.kind == "positive" and r.n == n]
        negative = [r for r in rows if r.kind == "negative" and r.n == n]
        if not positive:
            nulls[n] = "no positive control ran"
        elif not all(r.settled.verdict == Verdict.HELPED for r in positive):
            nulls[n] = "the positive control did not move"
        if not negative:
            gains[n] = "no negative control ran" + RECIPE
        elif not all(shown_small(r.bar.bound90, min_effect=min_effect) for r in negative):
            gains[n] = "the negative control is not shown small" + RECIPE
    return Controls(nulls, gains)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the rules read about one contrast.

    Args:
        settled: what its CI and bounds alone say (`settle`).
        p_holm: an exploratory question's Holm p, else None.
        plumbing: the quick scale, where nothing is read.
        faulty: an instrument fails every reading (`instrument_faults`).
        null_fault: a question's: why a null at its N cannot be read, else None.
        gain_fault: a pretrained arm's against a scratch twin: why a gain over scratch at its N cannot be read, else
            None.
        share: an attentive arm's against its uniform twin: its weights' mean effective share over its pretraining
            runs (NaN: not measured), else None.
    """

    settled: Judgment
    p_holm: float | None = None
    plumbing: bool = False
    faulty: bool = False
    null_fault: str | None = None
    gain_fault: str | None = None
    share: float | None = None


def _plumbing(f: Facts) -> Judgment | None:
    """The quick scale reads nothing: the numbers stay, the verbs go."""
    if f.plumbing:
        return Judgment(Verdict.PLUMBING)
    return None


def _failed_instrument(f: Facts) -> Judgment | None:
    """A scratch twin that learns nothing, or a transfer stage that segments nothing: every Δ is noise."""
    if f.faulty:
        return Judgment(Verdict.UNREADABLE)
    return None


def _uniform_weights(f: Facts) -> Judgment | None:
    """asa − mae with asa's weights near uniform tests no attentive loss, whatever its interval says."""
    if f.share is not None and f.share > UNIFORM_SHARE:
        return Judgment(Verdict.NOT_A_TEST, f"the attentive weights' effective share {f.share:.2f} > {UNIFORM_SHARE}: "
                                            "asa's loss is mae's in all but name")
    return None


def _holm(f: Facts) -> Judgment | None:
    """An exploratory effect off 0 alone but not across the family is inconclusive."""
    if f.p_holm is None or f.settled.verdict not in (Verdict.HELPED, Verdict.HURT):
        return None
    if f.p_holm < ALPHA:
        return None
    return Judgment(Verdict.INCONCLUSIVE, "holm")


def _sensitivity(f: Facts) -> Judgment | None:
    """A null is read only beside a positive control that moved."""
    if f.null_fault is not None and f.settled.verdict == Verdict.NO_DIFFERENCE:
        return Judgment(Verdict.UNSHOWN, f.null_fault)
    return None


def _recipe(f: Facts) -> Judgment | None:
    """A gain over scratch is read only beside a negative control shown small."""
    if f.gain_fault is not None and f.settled.verdict == Verdict.HELPED:
        return Judgment(Verdict.UNREADABLE, f.gain_fault)
    return None


def _settled(f: Facts) -> Judgment:
    """Else what the CI and the bounds say."""
    return f.settled


# the verdict rules in order: the first that applies gives a contrast's verdict
RULES: tuple[Callable[[Facts], Judgment | None], ...] = (
    _plumbing, _failed_instrument, _uniform_weights, _holm, _sensitivity, _recipe, _settled)


def judge(facts: Facts) -> Judgment:
    """The verdict of the first of `RULES` that applies to ``facts``."""
    for rule in RULES:
        judged = rule(facts)
        if judged is not None:
            return judged
    raise AssertionError("the last rule applies to every contrast")


@dataclasses.dataclass(frozen=True)
class Contrast(Measured):
    """A measured contrast with its reading: its row as the page and contrasts.json give it, built once by `read`.

    Args:
        bound: what its one-sided bounds exclude (`bound_text`), or `NOT_READ` beside a verdict not interpretable.
        verdict: the first of `RULES` that applies.
        why: why that verdict (None: the verdict says it).
        role: "primary", "exploratory" or "control".
        p_holm: an exploratory question's Holm p (None: not read on Holm).
        looks: the looks the primary is read over (None: one look, read at 95 %).
        level: the primary's confidence over its looks (None: one look).
        flags: a question's: why its encoders are flagged (`flagged`; None: a control, or nothing read).
        small: its one-sided upper bound under the minimum effect (a negative control shown small).
    """

    bound: str
    verdict: Verdict
    why: str | None
    role: str
    p_holm: float | None
    looks: int | None
    level: str | None
    flags: tuple[str, ...] | None
    small: bool

    @property
    def estimate(self) -> list[float]:
        """The endpoint's [value, low, high]."""
        return self.estimates[self.endpoint[0]]

    def to_dict(self) -> dict[str, Any]:
        """The row as contrasts.json writes it, its keys in the order earlier records have them."""
        out: dict[str, Any] = {"question": self.question, "kind": self.kind, "arm": self.arm,
                               "reference": self.reference, "encoder_arm": self.encoder_arm,
                               "reference_arm": self.reference_arm, "n": self.n, "endpoint": self.endpoint[0],
                               "endpoint_label": self.endpoint[1], "bootstrap": self.bootstrap}
        for key, values in self.estimates.items():
            out[key] = values
            if key == self.endpoint[0]:
                out.update(p=self.bar.p, bound90=self.bar.bound90, interval=self.bar.interval, mde=self.bar.mde)
                if self.bar.mde_more is not None:
                    out["mde_more"] = self.bar.mde_more
        out.update(bound=self.bound, verdict=self.verdict.value, why=self.why, role=self.role)
        if self.p_holm is not None:
            out["p_holm"] = self.p_holm
        if self.looks is not None:
            out["looks"], out["level"] = self.looks, self.level
        if self.flags is not None:
            out["flags"] = list(self.flags)
        return out


def instrument_faults(pilot: Mapping[str, Any], scores: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The instrument that fails every reading, so every Δ is noise: a scratch twin that learns nothing in the pilot,
    or a transfer stage whose every scored Dice is 0 (no arm segments the test cases)."""
    test = pilot.get("test") or {}
    mean = math.nan
    if test:
        mean = float(np.mean(list(test.values())))
    if mean < FOUND or pilot.get("learned") is False:
        return [f"the scratch twin does not learn the task ({_unlearned(pilot, mean)}), so every difference is noise."]
    if scores and all(float(r["Dice_mean"]) <= 0 for r in scores):
        return [f"every Dice the transfer stage scored is 0 ({len(scores)} scores of every arm): no arm segments the "
                "test cases, so every difference is noise."]
    return []


def _unlearned(pilot: Mapping[str, Any], mean: float) -> str:
    """Why the pilot did not learn: its ``mean`` test Dice under FOUND, or its validation Dice (or lesion Dice) under
    the study's floor."""
    if mean < FOUND:
        return f"the pilot's mean test Dice {mean:.3f} < {FOUND}"
    best = [f"{label} {pilot[key]:.3f}" for key, label in (("best_dice", "best validation Dice"),
                                                           ("best_lesion_dice", "best lesion Dice"))
            if not math.isnan(float(pilot.get(key, math.nan)))]
    if best and "floor" in pilot:
        return f"the pilot did not learn: {', '.join(best)}, under {pilot['floor']}"
    return "the pilot did not learn"


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


def effect_reading(value: float, low: float, high: float, *, min_effect: float) -> str:
    """A probe effect's reading from its estimate and interval: "higher" / "lower" (off 0 and at least
    ``min_effect``), none above ±m, or not read."""
    if math.isnan(low) or math.isnan(high):
        return "no interval (one pretraining seed)"
    if low > 0 and value >= min_effect:
        return "higher"
    if high < 0 and -value >= min_effect:
        return "lower"
    if -min_effect < low and high < min_effect:
        return f"no effect above ±{min_effect:g}"
    return "inconclusive"


@dataclasses.dataclass(frozen=True)
class ProbeRow:
    """A probed encoder's row (`asa.study.probes.read_probes`): its primary probe with its 95 % CI (NaN: a mean over
    classes has none), the mean ridge R² and the k-NN accuracy."""

    encoder: str
    arm: str
    replicate: int | None
    primary: float
    primary_ci: tuple[float, float]
    r2_mean: float
    knn: float


@dataclasses.dataclass(frozen=True)
class ProbeEffect:
    """A factorial effect on the primary probe (`asa.study.probes.factorial_effects`) and its reading."""

    name: str
    value: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    seeds: int
    reading: str


@dataclasses.dataclass(frozen=True)
class ProbeReading:
    """The probe stage's reading (``--probe-first``).

    Args:
        label: the primary probe's label.
        cases: the cases probed.
        folds: asa-probe's cross-validation folds.
        rows: every probed encoder, the random-init twin last.
        random: the random-init twin's primary probe.
        pretrained: the pretrained encoders probed.
        beat: how many of them read higher than the random-init twin.
        effects: the factorial's effects (empty: not read).
        shared: why the factorial is not read: its cells two or more arms share -> those arms (empty: none shared).
        chosen: the arm fine-tuned.
        min_effect: the smallest effect read.
    """

    label: str
    cases: int
    folds: int
    rows: tuple[ProbeRow, ...]
    random: float
    pretrained: int
    beat: int
    effects: tuple[ProbeEffect, ...]
    shared: dict[str, list[str]]
    chosen: str
    min_effect: float

    @property
    def tells_random(self) -> bool:
        """Whether every pretrained encoder reads higher than the random-init twin."""
        return self.beat == self.pretrained


def probe_reading(record: Mapping[str, Any], *, min_effect: float) -> ProbeReading:
    """The reading of the probe stage's ``record`` (probes.json): its rows, how many pretrained encoders beat the
    random-init twin, each factorial effect read at ``min_effect``."""
    rows = tuple(ProbeRow(r["encoder"], r["arm"], r["replicate"], r["primary"], tuple(r["primary_ci"]), r["r2_mean"],
                          r["knn"]) for r in record["rows"])
    random = next(r.primary for r in rows if r.arm == RANDOM_ROW)
    pretrained = [r for r in rows if r.arm in declared.pretraining_arms()]
    effects = tuple(ProbeEffect(e["effect"], e["value"], e["low"], e["high"], tuple(e["per_seed"]), e["seeds"],
                                effect_reading(e["value"], e["low"], e["high"], min_effect=min_effect))
                    for e in record["effects"])
    return ProbeReading(record["label"], record["cases"], record["folds"], rows, random, len(pretrained),
                        sum(r.primary > random for r in pretrained), effects, dict(record.get("shared") or {}),
                        record["chosen"], min_effect)


@dataclasses.dataclass(frozen=True)
class Reading:
    """A study's reading, computed once from its score rows (`read`); `asa.study.report` draws it and decides nothing.

    Args:
        endpoint: (score column, label) of the primary endpoint.
        keys: the contrasted (column, label)s, the endpoint first.
        contrasts: every contrast per N (contrasts.json).
        primary: the primary question's row (None: no pretrained arm against its twin).
        faults: the instrument faults that leave no verdict (`instrument_faults`).
        controls: per N, why nulls and gains over scratch cannot be read (`control_faults`).
        plumbing: the quick scale, where nothing is read.
        min_effect: the smallest Δ read as an effect.
        classes: per arm and N, each class's Δ Dice to its twin (`class_rows`).
        looks: the looks the primary is read over.
        unfinished: per pretraining run whose export is flagged (`flagged`), why (`unfinished`).
        rising: the pretraining runs whose held-out loss at the export stands above its lowest level (`rising`).
        probes: the probe stage's reading (None: no --probe-first).
    """

    endpoint: tuple[str, str]
    keys: tuple[tuple[str, str], ...]
    contrasts: tuple[Contrast, ...]
    primary: Contrast | None
    faults: tuple[str, ...]
    controls: Controls
    plumbing: bool
    min_effect: float
    classes: list[ClassRow]
    looks: Looks = Looks()
    unfinished: tuple[str, ...] = ()
    rising: frozenset[str] = frozenset()
    probes: ProbeReading | None = None

    @property
    def interpretable(self) -> bool:
        """Whether a line may claim a verdict, a sensitivity, an equivalence or a detectable effect."""
        return not (self.plumbing or self.faults)

    @property
    def mde(self) -> float:
        """The primary's minimum detectable effect, else NaN: no primary, or a reading from which nothing may be said
        (`interpretable`). It is the interval's, what the design's variance lets the primary see, so a primary whose
        verdict a control leaves unread (a gain no negative control bounds, a null no positive control backs) keeps
        it."""
        if self.primary is None or not self.interpretable:
            return math.nan
        return self.primary.bar.mde

    def detects(self, control: Contrast) -> bool:
        """Whether the primary would reliably see a gain of a positive ``control``'s size: its minimum detectable
        effect, where it may be said, at most the control's estimate."""
        return self.mde <= control.estimate[0]  # NaN: not shown

    def dicts(self) -> list[dict[str, Any]]:
        """The contrasts as contrasts.json writes them."""
        return [r.to_dict() for r in self.contrasts]


def _share(runs: Sequence[Mapping[str, Any]]) -> float:
    """The attentive weights' effective share over an arm's pretraining ``runs`` (NaN: none ran)."""
    if not runs:
        return math.nan
    return float(np.mean([float(run.get("weights_share", math.nan)) for run in runs]))


def _facts(m: Measured, p_holm: float | None, controls: Controls, runs: Sequence[Mapping[str, Any]], *,
           plumbing: bool, faulty: bool) -> Facts:
    """What the rules read about the contrast ``m``: its own reading, its family's, its N's controls', its arm's
    pretraining ``runs``'."""
    null_fault, gain_fault, share = None, None, None
    if m.kind == "question":
        null_fault = controls.nulls.get(m.n)
        if declared.scratch_twin(m.reference_arm) and not declared.scratch_twin(m.encoder_arm):
            gain_fault = controls.gains.get(m.n)
        if declared.attentive_over_uniform(m.encoder_arm, m.reference_arm):
            share = _share(runs)
    return Facts(m.settled, p_holm, plumbing, faulty, null_fault, gain_fault, share)


def contrast_row(m: Measured, judged: Judgment, *, role: str, p_holm: float | None, looks: Looks,
                 flags: tuple[str, ...] | None, min_effect: float) -> Contrast:
    """The row of the contrast ``m`` judged ``judged``: a verdict not interpretable claims no bound either."""
    bound = bound_text(*m.bar.bound90, min_effect=min_effect)
    if judged.verdict in NOT_INTERPRETABLE:
        bound = NOT_READ
    count, level = None, None
    if role == "primary" and looks.count > 1:
        count, level = looks.count, looks.level
    return Contrast(**vars(m), bound=bound, verdict=judged.verdict, why=judged.why, role=role, p_holm=p_holm,
                    looks=count, level=level, flags=flags, small=shown_small(m.bar.bound90, min_effect=min_effect))


def read(scores: Sequence[Mapping[str, Any]], info: Mapping[str, Any], *, n_boot: int,
         looks: Looks = Looks()) -> Reading:
    """The reading of a study's score rows, with its record ``info`` (classes, endpoint, pilot, pretraining runs,
    probes), the primary over the ``looks`` taken."""
    classes = list(info.get("classes", []))
    key = endpoint(classes, list(info.get("lesion_classes") or []))
    if info.get("endpoint"):
        key = tuple(info["endpoint"])
    runs = info.get("pretraining", [])
    cohorts = sorted({int(r["cohort"]) for r in runs if not declared.ARMS[r["arm"]].noise})
    encoders = [k.split("=", 1)[0] for k in info.get("encoders", [])]
    min_effect = float(info.get("min_effect", 0.01))
    measured = contrast_rows(scores, cohorts, encoders, n_boot=n_boot, min_effect=min_effect, endpoint=key)
    roles = family(measured, encoders)
    if roles.primary is not None and looks.count > 1:
        measured[roles.primary] = over_looks(measured[roles.primary], scores, looks, min_effect=min_effect)
    controls = control_faults(measured, min_effect=min_effect)
    plumbing = info.get("scale_name") == "quick"
    faults = tuple(instrument_faults(info.get("pilot") or {}, scores))

    def of(group: str) -> list[Mapping[str, Any]]:  # the pretraining runs of an arm at its cohort
        return [run for run in runs if declared.label(run["arm"], run["cohort"]) == group]

    contrasts = []
    for m, role, p_holm in zip(measured, roles.roles, roles.p_holm):
        facts = _facts(m, p_holm, controls, of(m.arm), plumbing=plumbing, faulty=bool(faults))
        flags = None
        if m.kind == "question" and not (plumbing or faults):
            # either side's pretraining runs not read as levelled at their export
            flags = tuple(unfinished(run) for group in (m.arm, m.reference) for run in of(group) if flagged(run))
        contrasts.append(contrast_row(m, judge(facts), role=role, p_holm=p_holm, looks=looks, flags=flags,
                                      min_effect=min_effect))
    primary = None
    if roles.primary is not None:
        primary = contrasts[roles.primary]
    probes = None
    if info.get("probes"):
        probes = probe_reading(info["probes"], min_effect=min_effect)
    return Reading(key, keys_of(scores, key), tuple(contrasts), primary, faults, controls, plumbing, min_effect,
                   class_rows(scores, classes), looks,
                   tuple(unfinished(run) for run in runs if flagged(run)),
                   frozenset(run["run"] for run in runs if rising(run)), probes)
