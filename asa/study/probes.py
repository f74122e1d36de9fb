"""asa-study's probe stage (``--probe-first``): frozen encoders probed on unscored cases, the factorial, the arm."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from asa.study.common import module_argv
from asa.study.arms import ARMS, pretraining_arms
from asa.study.runs import Pretraining
from asa.study.readings import RANDOM_ROW
from asa.study.scheduler import JsonFile, Unit
from asa.study.settings import Study

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
                inputs=(JsonFile(split, {"test": sorted(cases)}),), arms=tuple(dict.fromkeys(r.arm for r in runs)))


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


def choose_arm(rows: Sequence[Mapping[str, Any]]) -> str:
    """The pretraining arm whose runs have the highest mean primary probe (on a tie, the first declared)."""
    arms = [a for a in pretraining_arms() if any(r["arm"] == a for r in rows)]
    return max(arms, key=lambda arm: float(np.mean([r["primary"] for r in rows if r["arm"] == arm])))
