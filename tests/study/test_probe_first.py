"""asa-study --probe-first (asa.study.probes): the factorial's effects per pretraining seed and their t interval
against hand-computed values, the readings, the primary probe named from the endpoint, the arm chosen, and the stage
end to end: every pretrained encoder probed by asa-probe (a coordinate-channel one with its channel), the arm with
the higher primary probe the only one fine-tuned, with its scratch twin."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from asa.data.synthetic.demo import write_demo_dataset
from asa.io import save_checkpoint
from asa.models import build_network, network_spec
from asa.study import probes, readings, stages, study, transfer
from asa.study.arms import PILOT
from asa.study.scheduler import run_units

T1 = 12.706204736174707  # t(0.975, 1 df)


def _row(arm: str, replicate: int, primary: float, cohort: int = 40) -> dict:
    return {"encoder": f"{arm}-c{cohort}" + (f"-p{replicate}" if replicate else ""), "arm": arm, "cohort": cohort,
            "replicate": replicate, "primary": primary, "primary_ci": [math.nan, math.nan], "r2_mean": math.nan,
            "knn": math.nan}


def test_the_factorial_s_effects_are_taken_within_each_pretraining_seed_and_read_over_the_seeds():
    # seed 0: mae .10, asa .30, mae-coord .20, asa-coord .60; seed 1: mae .12, asa .28, mae-coord .18, asa-coord .50
    values = {"mae": (.10, .12), "asa": (.30, .28), "mae-coord": (.20, .18), "asa-coord": (.60, .50)}
    rows = [_row(arm, k, v[k]) for arm, v in values.items() for k in (0, 1)]
    rows += [_row("mae", 0, 0.9, cohort=10), _row("noise", 0, 0.95)]  # a smaller cohort and the control: not cells
    weight, coord, both = probes.factorial_effects(rows)
    # weight: ½(asa − mae + asa-coord − mae-coord): seed 0 ½(.20 + .40) = .30, seed 1 ½(.16 + .32) = .24
    assert weight["per_seed"] == pytest.approx([0.30, 0.24])
    assert weight["value"] == pytest.approx(0.27)
    half = T1 * math.sqrt(((0.30 - 0.27) ** 2 + (0.24 - 0.27) ** 2) / 1) / math.sqrt(2)  # t · sd / √2
    assert (weight["low"], weight["high"]) == pytest.approx((0.27 - half, 0.27 + half))
    # coordinate channel: ½(mae-coord − mae + asa-coord − asa): seed 0 ½(.10 + .30) = .20, seed 1 ½(.06 + .22) = .14
    assert coord["per_seed"] == pytest.approx([0.20, 0.14])
    # interaction: (asa-coord − mae-coord) − (asa − mae): seed 0 .40 − .20, seed 1 .32 − .16
    assert both["per_seed"] == pytest.approx([0.20, 0.16])
    assert weight["seeds"] == 2
    one_seed = probes.factorial_effects([r for r in rows if r["replicate"] == 0])
    assert math.isnan(one_seed[0]["low"]) and "one pretraining seed" in readings.effect_reading(
        one_seed[0]["value"], one_seed[0]["low"], one_seed[0]["high"], min_effect=.01)
    assert probes.factorial_effects([r for r in rows if r["arm"] != "mae-coord"]) == []  # a cell missing: not read


def test_an_effect_is_read_only_off_zero_and_above_the_minimum():
    def read(value, low, high):
        return readings.effect_reading(value, low, high, min_effect=0.02)

    assert read(0.05, 0.01, 0.09) == "higher"
    assert read(-0.05, -0.09, -0.01) == "lower"
    assert read(0.015, 0.011, 0.019) == "no effect above ±0.02"  # off zero, but under the minimum and inside it
    assert read(0.05, -0.01, 0.11) == "inconclusive"


def test_the_primary_probe_follows_the_endpoint_and_the_best_pretraining_arm_is_chosen():
    assert probes.primary_probe(["csf", "heterotopia"], ["heterotopia"]) == (["ridge/r2_heterotopia"],
                                                                           "ridge R² (heterotopia)")
    assert probes.primary_probe(["lesion"], [])[0] == ["ridge/r2_lesion"]
    assert probes.primary_probe(["a", "b"], [])[0] == ["ridge/r2_mean"]
    rows = [_row("mae", 0, .2), _row("mae", 1, .4), _row("asa", 0, .35), _row("asa", 1, .30), _row("noise", 0, .9)]
    assert probes.choose_arm(rows) == "asa"  # mean .325 over mae's .30; the negative control is never chosen


def _encoder(path, *, coord: bool, seed: int) -> None:
    torch.manual_seed(seed)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "in_channels": 1, "size": "tiny",
                                                               "coord_channel": coord}})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"network": network_spec(net), "model": net.state_dict(), "step": 1})


@pytest.mark.slow
def test_the_probe_stage_probes_every_encoder_and_fine_tunes_only_the_arm_it_supports(tmp_path, monkeypatch, capsys):
    """The pilot and the transfer stage are stand-ins (the pilot learned; the transfer records its arms), the
    pretraining writes tiny ResEnc encoders (one with the coordinate channel), asa-probe runs for real."""
    cohort = write_demo_dataset("bids", tmp_path / "cohort", cases=4, size=32, seed=5)
    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=9, size=32, seed=1)
    out = tmp_path / "study"
    real_run_units, real_plan_runs = run_units, transfer.plan_runs
    transferred: dict = {}

    def plan_runs(settings):
        if settings.out.name == "transfer":  # the last plan is the stage's (the check before it plans every arm)
            transferred.clear()
            transferred.update(settings.arms)
        return real_plan_runs(settings)

    def fake_run_units(units, jobs, clock, times, memory_gib):
        if [u.name for u in units] == ["probes"]:
            return real_run_units(units, jobs, clock, times, memory_gib)
        if any(u.name.startswith(f"{PILOT}/") for u in units):  # the pilot learned: a rising validation curve
            pilot = next(u for u in units if u.name.startswith(f"{PILOT}/"))
            path = Path(next(a for a in pilot.argv if a.startswith("output_dir=")).split("=", 1)[1]) / "scores.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            curve = [[10 * (i + 1), min(0.6, 0.1 * i)] for i in range(8)]
            path.write_text(json.dumps({"budget": {"val_curve": curve}, "scores": [], "names": []}))
            return True
        if any(u.name.startswith("transfer/") for u in units):
            return False
        for k, unit in enumerate(units):  # a pretraining run: its encoder
            run_dir = next(a.split("=", 1)[1] for a in unit.argv if a.startswith("output_dir="))
            _encoder(tmp_path / run_dir / "checkpoints" / "encoder.pt", coord="coord" in unit.name, seed=k)
        return True

    monkeypatch.setattr(stages, "run_units", fake_run_units)
    monkeypatch.setattr(transfer, "plan_runs", plan_runs)
    argv = ["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--out", str(out), "--quick",
            "--test", "3",  # a fixed split: the arm is chosen on its validation and pool cases
            "--network", "resenc-tiny", "--arms", "mae", "mae-coord", "--pretrain-runs", "1", "--probe-first",
            "--threads", "1", "--device", "cpu"]
    assert study.main(argv) == 3  # stopped in the transfer stage (the stand-in)
    record = json.loads((out / "probes" / "table" / "probe.json").read_text())
    assert [r["name"] for r in record["rows"]] == ["mae-c4", "mae-coord-c4", probes.RANDOM_ROW]
    split = json.loads((out / "checks" / "checks.json").read_text())["split"]
    probed = json.loads((out / "probes" / "cases.json").read_text())["test"]
    assert sorted(probed) == sorted([*split["val"], *split["pool"]]) and not set(probed) & set(split["test"])
    assert record["data"]["n"] == len(probed) == 6  # chosen on the 2 validation and 4 pool cases, none scored
    read = json.loads((out / "probes" / "probes.json").read_text())
    primary = {r["name"]: r["metrics"]["ridge/r2_mean"]["value"] for r in record["rows"]}
    assert [r["primary"] for r in read["rows"]] == pytest.approx([primary["mae-c4"], primary["mae-coord-c4"],
                                                                  primary[probes.RANDOM_ROW]])
    chosen = "mae" if primary["mae-c4"] >= primary["mae-coord-c4"] else "mae-coord"
    assert read["chosen"] == chosen and read["effects"] == []  # two of the four cells: the factorial is not read
    assert set(transferred) == {"scratch", f"{chosen}-c4", *(["scratch-coord"] if chosen == "mae-coord" else [])}
    said = capsys.readouterr().out
    assert f"Fine-tuned: **{chosen}**" in said and "The factorial is not read" in said
