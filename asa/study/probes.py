"""The probe stage of asa-study (``--probe-first``): every pretrained encoder, frozen, probed on labeled cases the
study does not score (its validation and training-pool cases) before any fine-tuning, the pretraining factorial read from the probes, and the one pretraining arm the
probes support, the only one the transfer stage fine-tunes.

- The probes are asa-probe's (`asa.api.probe`): each encoder run once over those cases on its own input grid
  (a coordinate-channel encoder with its channel), per-patch class fractions by ridge (R² per class) and the
  majority class by k-NN, subject-grouped cross-validation; a random-init twin of the first encoder is a row of its
  own, the floor a pretrained encoder is read against.
- The primary probe is named before anything trains, from the study's primary endpoint: the ridge R² of the
  lesion classes (their mean), of the one foreground class, else the mean over every class.
- The factorial: the pretraining arms as {uniform, attentive loss weight} × {no position code, the coordinate
  channel}, each pretraining arm's cell as it declares it (`asa.study.arms.Arm.cell`). With all four cells at the
  largest cohort, each main effect (and the interaction) is taken within each pretraining seed and read over the
  seeds, the replicate: the mean with its t interval on (seeds − 1) degrees of freedom.
- The arm fine-tuned: the pretraining arm whose runs have the highest mean primary probe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from asa.io import atomic_write_json
from asa.study.common import markdown_table, module_argv
from asa.study.arms import ARMS, pretraining_arms
from asa.study.plan import Pretraining
from asa.study.scheduler import Unit

__all__ = ["EFFECTS", "RANDOM_ROW", "choose_arm", "effect_reading", "factorial_effects", "primary_probe",
           "probe_lines", "probe_unit", "read_probes"]

RANDOM_ROW = "random-init"  # the row of the random-init twin (asa-probe's ``random`` entry)
# the factorial's effects: name -> (the arms' coefficients: (weighting, coordinate channel) -> ±½ or ±1)
EFFECTS = {
    "attentive weight (attentive − uniform)": {("attentive", False): .5, ("attentive", True): .5,
                                               ("uniform", False): -.5, ("uniform", True): -.5},
    "coordinate channel (with − without)": {("uniform", True): .5, ("attentive", True): .5,
                                            ("uniform", False): -.5, ("attentive", False): -.5},
    "interaction (weight effect with the channel − without)": {("attentive", True): 1., ("uniform", True): -1.,
                                                                ("attentive", False): -1., ("uniform", False): 1.},
}


def primary_probe(classes: Sequence[str], lesion_classes: Sequence[str]) -> tuple[list[str], str]:
    """(the probe metrics whose mean is the primary probe, its label), from the study's endpoint's classes."""
    named = list(lesion_classes) or (list(classes) if len(classes) == 1 else [])
    if named:
        return [f"ridge/r2_{c}" for c in named], f"ridge R² ({', '.join(named)})"
    return ["ridge/r2_mean"], "ridge R² (mean over classes)"


def probe_unit(out: Path, runs: Sequence[Pretraining], *, data: str, root: Path, channels: Sequence[str],
               cases: Sequence[str], seed: int, device: str, threads: int | None,
               overrides: Sequence[str] = ()) -> Unit:
    """asa-probe over every pretraining run's encoder and a random-init twin, on ``cases`` (labeled cases the study
    does not score, listed in ``<out>/probes/cases.json``), its tables in ``<out>/probes/table``; done when they hold a row per
    encoder of ``runs`` (a study grown by arms probes again: the old table is moved aside)."""
    folder = out / "probes"
    split = folder / "cases.json"
    atomic_write_json(split, {"test": sorted(cases)})
    names = [*(r.name for r in runs), RANDOM_ROW]
    argv = module_argv("asa.cli.probe", f"encoders=[{','.join([*(str(r.encoder) for r in runs), 'random'])}]",
                       f"names=[{','.join(names)}]", f"data={data}", f"data.root={root}",
                       f"channels=[{','.join(channels)}]", f"split_file={split}", "subset=test",
                       f"output={folder / 'table'}", "overwrite=true", f"seed={seed}", f"device={device}",
                       *overrides)

    def done() -> bool:
        table = folder / "table" / "probe.json"
        if not table.is_file():
            return False
        return [r["name"] for r in json.loads(table.read_text())["rows"]] == names

    return Unit("probes", argv, done, out / "logs" / "probes.log", resumable=False, threads=threads)


def read_probes(record: Mapping[str, Any], runs: Sequence[Pretraining], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per probed encoder (the pretraining runs, then the random-init twin): its arm, pretraining seed
    (replicate), the primary probe (the mean of ``keys``; its CI when one key), R² mean and k-NN accuracy."""
    by_name = {r["name"]: r for r in record["rows"]}
    out = []
    for run in [*runs, None]:
        name = RANDOM_ROW if run is None else run.name
        metrics = by_name[name]["metrics"]
        values = [metrics[k]["value"] for k in keys]
        value = math.nan if any(v is None for v in values) else float(np.mean(values))
        low, high = ((metrics[keys[0]].get("ci_low"), metrics[keys[0]].get("ci_high")) if len(keys) == 1
                     else (None, None))
        out.append({"encoder": name, "arm": RANDOM_ROW if run is None else run.arm,
                    "cohort": None if run is None else run.cohort, "replicate": None if run is None else run.replicate,
                    "primary": value, "primary_ci": [math.nan if low is None else low, math.nan if high is None else high],
                    "r2_mean": _value(metrics.get("ridge/r2_mean")), "knn": _value(metrics.get("knn/accuracy"))})
    return out


def _value(est: Mapping[str, Any] | None) -> float:
    return math.nan if not est or est.get("value") is None else float(est["value"])


def factorial_effects(rows: Sequence[Mapping[str, Any]], *, confidence: float = 0.95) -> list[dict[str, Any]]:
    """The main effects and the interaction of the factorial (`EFFECTS`) on the primary probe at the largest cohort,
    when all four cells ran with the same pretraining seeds: per seed the contrast of the four cells, then their
    mean over the seeds with its t interval (seeds − 1 degrees of freedom; one seed: no interval). Empty when a cell
    is missing."""
    arms = [r for r in rows if r["arm"] in pretraining_arms()]
    if not arms:
        return []
    largest = max(r["cohort"] for r in arms)
    cells: dict[tuple[str, bool], dict[int, float]] = {}
    for r in arms:
        if r["cohort"] == largest:
            cells.setdefault(ARMS[r["arm"]].cell, {})[r["replicate"]] = r["primary"]
    seeds = sorted(set.intersection(*(set(v) for v in cells.values()))) if len(cells) == 4 else []
    if not seeds:
        return []
    out = []
    for name, coef in EFFECTS.items():
        per_seed = [sum(c * cells[cell][k] for cell, c in coef.items()) for k in seeds]
        mean = float(np.mean(per_seed))
        if len(per_seed) > 1:
            half = float(stats.t.ppf((1 + confidence) / 2, len(per_seed) - 1) * np.std(per_seed, ddof=1)
                         / math.sqrt(len(per_seed)))
        else:
            half = math.nan
        out.append({"effect": name, "value": mean, "low": mean - half, "high": mean + half, "per_seed": per_seed,
                    "seeds": len(seeds)})
    return out


def effect_reading(effect: Mapping[str, Any], *, min_effect: float) -> str:
    """A probe effect's reading: "higher" / "lower" (its interval off 0 and the estimate at least ``min_effect``),
    "no effect above ±m" (the interval inside ±``min_effect``), else "inconclusive"; one seed: "no interval"."""
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
    """The pretraining arm (not the negative control) whose runs have the highest mean primary probe (the first
    in the study's order on a tie)."""
    means: dict[str, list[float]] = {}
    for r in rows:
        if r["arm"] in pretraining_arms():
            means.setdefault(r["arm"], []).append(r["primary"])
    return max(means, key=lambda arm: float(np.mean(means[arm])))


def probe_lines(probes: Mapping[str, Any], *, min_effect: float) -> list[str]:
    """The report's section: the probe table, the factorial's effects and the arm the probes chose."""
    label = probes["label"]
    cells = [[r["encoder"], r["arm"], "—" if r["replicate"] is None else str(r["replicate"]),
              _number(r["primary"]) + ("" if math.isnan(r["primary_ci"][0]) else
                                       f" [{r['primary_ci'][0]:.3f}, {r['primary_ci'][1]:.3f}]"),
              _number(r["r2_mean"]), _number(r["knn"])] for r in probes["rows"]]
    lines = [f"Every pretrained encoder frozen and probed on {probes['cases']} labeled cases the transfer stage does not "
             "score (the validation and training-pool cases; the arm is chosen on them, never on the scored test cases) "
             "before any fine-tuning "
             f"(asa-probe, {probes['folds']}-fold cross-validation, 95 % bootstrap CI over the cases). Primary probe: "
             f"**{label}**, named before anything trained.", "",
             markdown_table(["encoder", "arm", "pretraining seed", label, "ridge R² mean", "k-NN accuracy"], cells,
                            left=3)]
    random = next(r["primary"] for r in probes["rows"] if r["arm"] == RANDOM_ROW)
    above = [r for r in probes["rows"] if r["arm"] in pretraining_arms()]
    if above:
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
        lines += ["The factorial is not read: its four cells (mae, asa, mae-coord, asa-coord) did not all run with "
                  "the same pretraining seeds.", ""]
    lines += [f"Fine-tuned: **{probes['chosen']}** (the highest mean primary probe of the pretraining arms), with "
              "the scratch twins and the controls; the other arms were pretrained and probed, not fine-tuned.", ""]
    return lines


def _number(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.3f}"
