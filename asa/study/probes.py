"""asa-study's probe stage (``--probe-first``): frozen encoders probed on unscored cases, the factorial, the arm."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from asa.study.common import markdown_table, module_argv
from asa.study.arms import ARMS, pretraining_arms
from asa.study.plan import Pretraining
from asa.study.scheduler import Unit
from asa.study.settings import Study

RANDOM_ROW = "random-init"  # the row of the random-init twin (asa-probe's ``random`` entry)
# the factorial's effects: name -> (the arms' coefficients: (weighting, coordinate channel) -> ±½ or ±1)
CELLS = [(w, c) for w in ("attentive", "uniform") for c in (False, True)]
EFFECTS = {"attentive weight (attentive − uniform)": {(w, c): .5 if w == "attentive" else -.5 for w, c in CELLS},
           "coordinate channel (with − without)": {(w, c): .5 if c else -.5 for w, c in CELLS},
           "interaction (weight effect with the channel − without)": {(w, c): 1. if (w == "attentive") == c else -1.
                                                                       for w, c in CELLS}}


def primary_probe(classes: Sequence[str], lesion_classes: Sequence[str]) -> tuple[list[str], str]:
    """(the probe metrics whose mean is the primary probe, its label), from the study's endpoint's classes."""
    if named := list(lesion_classes) or (list(classes) if len(classes) == 1 else []):
        return [f"ridge/r2_{c}" for c in named], f"ridge R² ({', '.join(named)})"
    return ["ridge/r2_mean"], "ridge R² (mean over classes)"


def probe_unit(s: Study, runs: Sequence[Pretraining], channels: Sequence[str], cases: Sequence[str],
               overrides: Sequence[str] = ()) -> Unit:
    """asa-probe over every run's encoder and a random-init twin on ``cases``, with the study's data, seed, device and
    threads; done with a row per encoder."""
    folder, split = s.out / "probes", s.out / "probes" / "cases.json"
    names = [*(r.name for r in runs), RANDOM_ROW]
    argv = module_argv("asa.cli.probe", f"encoders=[{','.join([*(str(r.encoder) for r in runs), 'random'])}]",
                       f"names=[{','.join(names)}]", f"data={s.data}", f"data.root={s.root}",
                       f"channels=[{','.join(channels)}]", f"split_file={split}", "subset=test",
                       f"output={folder / 'table'}", "overwrite=true", f"seed={s.seed}", f"device={s.device}",
                       *overrides)

    def done() -> bool:
        table = folder / "table" / "probe.json"
        return table.is_file() and [r["name"] for r in json.loads(table.read_text())["rows"]] == names

    return Unit("probes", argv, done, s.out / "logs" / "probes.log", resumable=False, threads=s.threads,
                inputs=((split, {"test": sorted(cases)}),))


def read_probes(record: Mapping[str, Any], runs: Sequence[Pretraining], keys: Sequence[str]) -> list[dict[str, Any]]:
    """A row per probed encoder (the runs, then the random-init twin); the primary probe: the mean of ``keys``."""
    by_name = {r["name"]: r["metrics"] for r in record["rows"]}

    def row(name: str, arm: str, cohort: int | None, replicate: int | None) -> dict[str, Any]:
        metrics = by_name[name]
        ci = metrics[keys[0]] if len(keys) == 1 else {}
        return {"encoder": name, "arm": arm, "cohort": cohort, "replicate": replicate,
                "primary": float(np.mean([_value(metrics[k]) for k in keys])),
                "primary_ci": [_value(ci, "ci_low"), _value(ci, "ci_high")],
                "r2_mean": _value(metrics.get("ridge/r2_mean")), "knn": _value(metrics.get("knn/accuracy"))}

    return [*(row(r.name, r.arm, r.cohort, r.replicate) for r in runs), row(RANDOM_ROW, RANDOM_ROW, None, None)]


def _value(est: Mapping[str, Any] | None, key: str = "value") -> float:
    return math.nan if not est or est.get(key) is None else float(est[key])


def shared_cells(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The factorial's cells that two or more probed arms fall in -> those arms, in their declared order."""
    cells: dict[tuple[str, bool], list[str]] = {}
    for arm in (a for a in pretraining_arms() if any(r["arm"] == a for r in rows)):
        cells.setdefault(ARMS[arm].cell, []).append(arm)
    return {f"{w}, {'with' if c else 'without'} the coordinate channel": a for (w, c), a in cells.items() if len(a) > 1}


def factorial_effects(rows: Sequence[Mapping[str, Any]], *, confidence: float = 0.95) -> list[dict[str, Any]]:
    """The factorial's `EFFECTS` at the largest cohort, per seed then over seeds (t interval); empty: a cell missing,
    or held by two arms (`shared_cells`: which would read it is no design's choice)."""
    arms = [r for r in rows if r["arm"] in pretraining_arms()]
    if not arms or shared_cells(rows):
        return []
    largest = max(r["cohort"] for r in arms)
    cells: dict[tuple[str, bool], dict[int, float]] = {}
    for r in (r for r in arms if r["cohort"] == largest):
        cells.setdefault(ARMS[r["arm"]].cell, {})[r["replicate"]] = r["primary"]
    if len(cells) != 4 or not (seeds := sorted(set.intersection(*(set(v) for v in cells.values())))):
        return []
    out = []
    for name, coef in EFFECTS.items():
        per_seed = [sum(c * cells[cell][k] for cell, c in coef.items()) for k in seeds]
        mean, n = float(np.mean(per_seed)), len(per_seed)
        half = (float(stats.t.ppf((1 + confidence) / 2, n - 1) * np.std(per_seed, ddof=1) / math.sqrt(n)) if n > 1
                else math.nan)
        out.append({"effect": name, "value": mean, "low": mean - half, "high": mean + half, "per_seed": per_seed,
                    "seeds": len(seeds)})
    return out


def effect_reading(effect: Mapping[str, Any], *, min_effect: float) -> str:
    """A probe effect's reading: "higher" / "lower" (off 0 and at least ``min_effect``), none above ±m, or not read."""
    value, low, high = effect["value"], effect["low"], effect["high"]
    if math.isnan(low) or math.isnan(high):
        return "no interval (one pretraining seed)"
    if low > 0 and value >= min_effect:
        return "higher"
    if high < 0 and -value >= min_effect:
        return "lower"
    if -min_effect < low and high < min_effect:
        return f"no effect above ±{min_effect:g}"
    return "inconclusive"


def choose_arm(rows: Sequence[Mapping[str, Any]]) -> str:
    """The pretraining arm whose runs have the highest mean primary probe (on a tie, the first declared)."""
    arms = [a for a in pretraining_arms() if any(r["arm"] == a for r in rows)]
    return max(arms, key=lambda arm: float(np.mean([r["primary"] for r in rows if r["arm"] == arm])))


def probe_lines(probes: Mapping[str, Any], *, min_effect: float) -> list[str]:
    """The report's section: the probe table, the factorial's effects and the arm the probes chose."""
    label = probes["label"]
    cells = [[r["encoder"], r["arm"], "—" if r["replicate"] is None else str(r["replicate"]),
              _number(r["primary"]) + ("" if math.isnan(r["primary_ci"][0]) else
                                       f" [{r['primary_ci'][0]:.3f}, {r['primary_ci'][1]:.3f}]"),
              _number(r["r2_mean"]), _number(r["knn"])] for r in probes["rows"]]
    lines = [f"Every pretrained encoder frozen and probed on {probes['cases']} labeled cases the transfer stage "
             "does not score (the validation and training-pool cases; the arm is chosen on them, never on the "
             f"scored test cases) before any fine-tuning (asa-probe, {probes['folds']}-fold cross-validation, 95 % "
             f"bootstrap CI over the cases). Primary probe: **{label}**, named before anything trained.", "",
             markdown_table(["encoder", "arm", "pretraining seed", label, "ridge R² mean", "k-NN accuracy"], cells,
                            left=3)]
    random = next(r["primary"] for r in probes["rows"] if r["arm"] == RANDOM_ROW)
    if above := [r for r in probes["rows"] if r["arm"] in pretraining_arms()]:
        beat = sum(r["primary"] > random for r in above)
        lines += [f"{beat} of {len(above)} pretrained encoders read higher than the random-init twin ({random:.3f})"
                  + ("." if beat == len(above) else ": the probe does not tell every pretrained encoder from a "
                     "random one."), ""]
    if probes["effects"]:
        rows = [[e["effect"], f"{e['value']:+.3f}",
                 "—" if math.isnan(e["low"]) else f"[{e['low']:+.3f}, {e['high']:+.3f}]",
                 ", ".join(f"{v:+.3f}" for v in e["per_seed"]), effect_reading(e, min_effect=min_effect)]
                for e in probes["effects"]]
        lines += [f"The factorial on the primary probe, each effect taken within a pretraining seed and read over the "
                  f"{probes['effects'][0]['seeds']} seeds (t interval, seeds − 1 degrees of freedom; minimum effect "
                  f"{min_effect:g}):", "",
                  markdown_table(["effect", "estimate", "95 % CI", "per seed", "reading"], rows, left=1)]
    else:
        why = ("; ".join(f"{' and '.join(a)} share its cell ({cell})" for cell, a in probes["shared"].items())
               + ", so which of them it reads would be the order they were named in." if probes.get("shared") else
               "its four cells (mae, asa, mae-coord, asa-coord) did not all run with the same pretraining seeds.")
        lines += [f"The factorial is not read: {why}", ""]
    return [*lines, f"Fine-tuned: **{probes['chosen']}** (the highest mean primary probe of the pretraining arms), "
            "with the scratch twins and the controls; the other arms were pretrained and probed, not fine-tuned.", ""]


def _number(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.3f}"
