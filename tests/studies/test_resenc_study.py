"""studies/resenc.py: the plan (arms, cohorts, the noise control, every option stated), its dry run,
and resuming across calls cut by the time budget (no training: the pretraining and transfer stages are
stood in for, the bookkeeping is the script's own)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from studies import resenc as study
from studies import transfer


def _option(run, key: str) -> str:
    return next(o.split("=", 1)[1] for o in run.overrides if o.startswith(key + "="))


def test_plan_states_every_option_of_every_arm(tmp_path):
    scale = study.SCALES["quick"]
    runs = study.plan_pretraining(tmp_path, scale, list(study.ARMS), seed=0, mirror_visible=0.25)
    names = [r.name for r in runs]
    assert names == ([f"{arm}-c{n}" for n in scale.cohorts for arm in study.ARMS]
                     + [f"noise-c{max(scale.cohorts)}"] + [f"swvit-asa-c{n}" for n in scale.cohorts])
    for run in runs:
        if run.network != "resenc":
            assert _option(run, "experiment") == "asa" and _option(run, "model") == scale.swvit
            continue
        spec = study.ARMS["mae" if run.arm == study.CONTROL else run.arm]
        assert _option(run, "method") == spec["method"]
        assert _option(run, "method.loss_weighting") == spec["loss_weighting"]
        assert _option(run, "method.mirror_visible") == ("0.25" if spec["mirror"] else "null")
        assert _option(run, "method.coord_channel") == str(spec["coord"]).lower()
        assert _option(run, "method.weight_power") == str(spec["power"])
        assert [o for o in run.overrides if o in study.MASKING] == list(study.MASKING)  # nnssl's masking, stated
        kind = "noise" if run.arm == study.CONTROL else "unlabeled"
        assert _option(run, "data.root") == str(study.cohort_dir(tmp_path, kind, run.cohort))
    # each variant differs from asa in exactly its own option, and asa from mae in its loss weighting
    asa = set(runs[names.index("asa-c4")].overrides)
    for arm, option in (("asa-sharp", "method.weight_power"), ("asa-mirror", "method.mirror_visible"),
                        ("asa-coord", "method.coord_channel")):
        diff = set(runs[names.index(f"{arm}-c4")].overrides) ^ asa
        assert {o.split("=", 1)[0] for o in diff} == {option, "output_dir"}, arm
    diff = set(runs[names.index("mae-c4")].overrides) ^ asa
    assert {o.split("=", 1)[0] for o in diff} == {"method", "method.loss_weighting", "output_dir"}


def test_resenc_arms_pretrain_on_the_whole_head_unless_their_encoder_is_tied_to_the_crop(tmp_path):
    scale = study.SCALES["cpu"]
    assert (scale.crop, scale.pretrain_crop) == (32, scale.volume)  # the attentive weight varies at the whole head
    runs = study.plan_pretraining(tmp_path, scale, list(study.ARMS), seed=0, mirror_visible=0.25)
    crops = {run.name: _option(run, "data.crop") for run in runs}
    assert {name for name, crop in crops.items() if crop == "32"} == {
        f"{arm}-c{n}" for n in scale.cohorts  # the channel, the position code, the mirror pairs (3 blocks at 48³)
        for arm in ("asa-coord", "swvit-asa", "asa-mirror")}
    assert all(crop in ("32", "48") for crop in crops.values())
    with pytest.raises(SystemExit, match="--pretrain-crop 64: between --crop 32 and --volume 48"):
        study.main(["--pretrain-crop", "64", "--out", str(tmp_path), "--dry-run"])


def test_every_cohort_gets_the_same_pretraining_steps():
    scale = study.SCALES["cpu"]
    for subjects in scale.cohorts:
        epochs = study.pretraining_epochs(scale, subjects, batch=2)
        steps = epochs * (int(0.8 * subjects) // 2)
        assert abs(steps - scale.pretrain_steps) <= int(0.8 * subjects) // 2, (subjects, steps)


def test_finetuning_arms_follow_their_encoders(tmp_path):
    scale = study.SCALES["quick"]
    runs = study.plan_pretraining(tmp_path, scale, ["mae", "asa", "asa-coord"], seed=0, mirror_visible=0.25)
    arms = study.finetune_arms(runs, scale)
    assert arms[study.REFERENCE] == "model=resenc,model.size=tiny"  # scratch: no encoder
    # the coordinate channel's own effect: scratch with the channel, since asa-coord learned with it
    assert arms[study.COORD_SCRATCH] == "model=resenc,model.size=tiny,model.coord_channel=true"
    assert study.COORD_SCRATCH not in study.finetune_arms([r for r in runs if not r.coord], scale)
    # the positive control: the encoder of scratch ResEnc trained with labels on other subjects
    supervised = study.supervised_dir(runs) / "checkpoints" / "last.pt"
    assert arms[f"resenc-{study.SUPERVISED}"] == f"model=resenc,model.size=tiny,model.pretrained={supervised}"
    overrides = study.supervised_overrides(tmp_path, scale, 0, runs)
    assert f"data.root={tmp_path / 'data' / study.SUPERVISED}" in overrides and "model.pretrained=null" not in overrides
    assert f"output_dir={study.supervised_dir(runs)}" in overrides
    for run in runs:
        spec = arms[f"resenc-{run.name}" if run.network == "resenc" else run.name]
        assert f"model.pretrained={run.encoder}" in spec.split(",")
        assert ("model.coord_channel=true" in spec) == (run.network == "resenc" and run.coord)  # the channel it learned with
    options = SimpleNamespace(seed=0, device="cpu", n_boot=10, threads=None, drop_checkpoints=False, override=[],
                              budget_arms=[study.REFERENCE, "resenc-asa-c{c}"], budget_fractions=[0.25, 0.5],
                              budget_cases=None, no_swvit=False)
    argv = study.transfer_argv(options, dataclasses.replace(scale, steps=40), runs, tmp_path, None)
    assert "--no-scratch" not in argv  # the SW-ViT from scratch is transfer's built-in 'scratch' arm
    without = study.transfer_argv(SimpleNamespace(**{**vars(options), "no_swvit": True}),
                                  dataclasses.replace(scale, steps=40), runs, tmp_path, None)
    assert without == [*argv[:argv.index("--arm")], "--no-scratch", *argv[argv.index("--arm"):]]
    at_two = study.transfer_argv(SimpleNamespace(**{**vars(options), "budget_cases": [2]}),
                                 dataclasses.replace(scale, steps=40), runs, tmp_path, None)
    assert at_two == [*argv, "--budget-cases", "2"]
    assert argv[argv.index("--reference") + 1] == study.REFERENCE
    assert argv[argv.index("--val-cases") + 1] == str(scale.val)
    assert argv.count("--arm") == len(arms)
    budget = argv.index("--budget-arms")
    assert argv[budget + 1: budget + 3] == [study.REFERENCE, f"resenc-asa-c{max(scale.cohorts)}"]
    assert argv[argv.index("--budget-fractions") + 1:][:2] == ["0.25", "0.5"]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    assert study.main(["--quick", "--arms", "asa", "--cohorts", "4", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "asa-pretrain model=resenc" in text and "data.root=" + str(out / "data" / "noise-4") in text
    assert "resenc-asa-c4" in text and "reference resenc-scratch" in text
    assert not out.exists()


def test_refusals(tmp_path):
    with pytest.raises(SystemExit, match="--crop 32: must be smaller than --volume 32"):
        study.main(["--quick", "--volume", "32", "--out", str(tmp_path), "--dry-run"])
    with pytest.raises(SystemExit, match="--mirror-visible 1.5"):
        study.main(["--quick", "--mirror-visible", "1.5", "--out", str(tmp_path), "--dry-run"])


class _Done:
    """A finished process of the run stage."""

    returncode = 0

    def poll(self):
        return 0

    def wait(self):
        return 0

    def send_signal(self, signum):
        raise AssertionError("a finished unit is not signalled")


# a validation curve that rises, then stays flat from step 60 (of 120): its trailing mean of 3 rounds is flat from 80
CURVE = [[10 * (k + 1), min(0.6, 0.1 * (k + 1))] for k in range(12)]


def _fake_stages(monkeypatch, calls: list[str]):
    """Stand-in for the processes of the study (`study.launch`) and the cohort writer: each unit records its
    call and writes what the real one leaves behind (the pilot's scores.json with its validation curve; a
    finished last.pt and encoder.pt; transfer.md)."""
    monkeypatch.setattr(study, "write_chunks", lambda out, scale, **kw: True)

    def launch(unit):
        argv = list(unit.argv)
        calls.append(unit.name)
        if unit.name == study.PILOT:
            out = Path(argv[argv.index("--out") + 1])
            n = argv[argv.index("--cases") + 1]
            scores = out / "runs" / f"scratch-n{n}-s0" / "scores.json"
            scores.parent.mkdir(parents=True)
            scores.write_text(json.dumps({"scores": [], "budget": {"val_curve": CURVE}}))
        elif unit.name == "transfer":
            out = Path(argv[argv.index("--out") + 1])
            assert argv[argv.index("--steps") + 1] == "80"  # the pilot's converged budget (trailing mean of 3)
            out.mkdir(parents=True, exist_ok=True)
            (out / "transfer.md").write_text("| arm | labeled |\n")
        else:  # a pretraining run or the positive control: output_dir=
            run_dir = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")))
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            torch.save({"step": 4, "scheduler": {"total_steps": 4}, "history": [{"val/loss": 1.0}, {"val/loss": 0.5}]},
                       run_dir / "checkpoints" / "last.pt")
            torch.save({"encoder": torch.zeros(1)}, run_dir / "checkpoints" / "encoder.pt")
        return _Done()

    monkeypatch.setattr(study, "launch", launch)
    monkeypatch.setattr(study.time, "sleep", lambda s: None)


def test_calls_cut_by_the_budget_resume_where_the_last_stopped(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_stages(monkeypatch, calls)
    budget = {"left": 300.0}
    monkeypatch.setattr(study.Clock, "left", lambda self: budget["left"])
    argv = ["--quick", "--arms", "mae", "asa", "--cohorts", "4", "--no-swvit-pretraining", "--time-budget", "300",
            "--jobs", "1", "--out", str(tmp_path / "s")]
    real_launch = study.launch

    def launch_then_run_out(unit):  # the budget ends after the third unit
        proc = real_launch(unit)
        if len(calls) == 3:
            budget["left"] = 5.0
        return proc

    monkeypatch.setattr(study, "launch", launch_then_run_out)
    assert study.main(argv) == 3  # not finished: the caller runs the same command again
    assert calls == [study.PILOT, study.SUPERVISED, "mae-c4"]
    budget["left"] = 300.0
    monkeypatch.setattr(study, "launch", real_launch)
    assert study.main(argv) == 0
    assert calls == [study.PILOT, study.SUPERVISED, "mae-c4", "asa-c4", "noise-c4", "transfer"]  # nothing twice
    report = json.loads((tmp_path / "s" / "report" / "report.json").read_text())
    assert [r["run"] for r in report["pretraining"]] == ["mae-c4", "asa-c4", "noise-c4"]
    assert all(r["val_loss_first"] == 1.0 and r["val_loss_last"] == 0.5 for r in report["pretraining"])
    assert report["pilot"]["budget"] == 80 and report["pilot"]["converged"] and report["scale"]["steps"] == 80
    readme = (tmp_path / "s" / "report" / "README.md").read_text()
    assert "Literature" in readme and "stopped rising at step 80" in readme
    # another setting in the same folder is refused, naming it
    with pytest.raises(SystemExit, match="arms differ"):
        study.main([*argv[:2], "mae", *argv[4:]])


def test_a_rerun_may_add_arms_smaller_cohorts_and_seeds_and_runs_only_the_new_units(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_stages(monkeypatch, calls)
    out = tmp_path / "s"
    base = ["--quick", "--no-swvit-pretraining", "--jobs", "1", "--out", str(out)]
    assert study.main([*base, "--arms", "mae", "asa", "--cohorts", "4"]) == 0
    assert calls == [study.PILOT, study.SUPERVISED, "mae-c4", "asa-c4", "noise-c4", "transfer"]
    # a record written before the extremes were recorded, and with "every cohort" as null, reads as today's
    record = json.loads((out / "study.json").read_text())
    for key in ("largest_cohort", "pilot_cases"):
        del record[key]
    (out / "study.json").write_text(json.dumps(record | {"ablation_cohorts": None}))
    calls.clear()
    assert study.main([*base, "--arms", "mae", "asa", "--cohorts", "4"]) == 0
    assert calls == ["transfer"]  # the same study: nothing trained again
    calls.clear()
    grid = ["--arms", "mae", "asa", "asa-coord", "--ablation-cohorts", "4", "--seeds", "0", "1", "2"]
    extended = [*base, *grid, "--cohorts", "2", "4"]
    assert study.main(extended) == 0
    assert calls == ["mae-c2", "asa-c2", "asa-coord-c4", "transfer"]  # only the new units
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["arms"] == ["mae", "asa", "asa-coord"] and recorded["scale"]["cohorts"] == [2, 4]
    assert recorded["scale"]["seeds"] == [0, 1, 2] and recorded["ablation_cohorts"] == [4]
    # what finished units were made with stays: a larger cohort (another noise control), a larger N (another
    # pilot), a dropped arm, another seed of the cohorts
    for argv, differ in (([*base, *grid, "--cohorts", "2", "4", "8"], "largest_cohort"),
                         ([*extended, "--cases", "2", "4"], "pilot_cases"),
                         ([*base, "--arms", "mae", "asa", "--cohorts", "2", "4", "--seeds", "0", "1", "2"],
                          "arms may gain entries but not lose them"),
                         ([*extended, "--seed", "1"], "seed differ")):
        with pytest.raises(SystemExit, match=differ):
            study.main(argv)


def test_a_failed_unit_ends_the_study_naming_its_log(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_stages(monkeypatch, calls)

    class Failed(_Done):
        returncode = 1

        def poll(self):
            return 1

    monkeypatch.setattr(study, "launch", lambda unit: calls.append(unit.name) or Failed())
    with pytest.raises(SystemExit, match=r"pilot failed \(exit 1\): see .*pilot\.log"):
        study.main(["--quick", "--arms", "mae", "--cohorts", "4", "--no-swvit-pretraining", "--jobs", "1",
                    "--out", str(tmp_path / "s")])


def test_the_converged_budget_is_where_validation_dice_stops_rising():
    found = transfer.converged_budget(CURVE)
    assert found["budget"] == 80 and found["converged"] and found["best"] == pytest.approx(0.6)
    rising = [[10 * (k + 1), 0.05 * (k + 1)] for k in range(12)]  # still rising at the end: not converged
    found = transfer.converged_budget(rising)
    assert found["budget"] == 120 and not found["converged"]
    with pytest.raises(ValueError, match="at least 6 validation rounds"):
        transfer.converged_budget(CURVE[:5])


def test_the_pilot_sets_the_budget_and_a_cap_holds_it_and_says_so(tmp_path):
    scale = dataclasses.replace(study.SCALES["quick"], pilot_steps=120)
    scores = study.pilot_scores(tmp_path, scale)
    scores.parent.mkdir(parents=True)
    rising = [[10 * (k + 1), 0.05 * (k + 1)] for k in range(12)]
    for curve, asked in ((CURVE, 80), (rising, 120)):  # converged at 80; still rising: the pilot's length
        scores.write_text(json.dumps({"budget": {"val_curve": curve}}))
        pilot = study.pilot_budget(tmp_path, scale)
        assert (pilot["steps"], pilot["asked"], pilot["capped"]) == (asked, asked, False)
        assert f"the study fine-tunes {asked} steps" in study.pilot_markdown(pilot)
        capped = study.pilot_budget(tmp_path, scale, cap=60)
        assert (capped["steps"], capped["asked"], capped["capped"]) == (60, asked, True)
        text = study.pilot_markdown(capped).split("\n")[0]
        assert f"budget is the pilot's {asked} steps" in text or f"a budget of {asked} steps" in text
        assert "`--budget-cap` holds the study to 60 steps" in text and "not at their end points" in text
        assert not study.pilot_budget(tmp_path, scale, cap=500)["capped"]  # a cap above the budget changes nothing
    # the pilot's test scores per class, and whether the host finds each lesion kind (its own positive control)
    cases = [{"Dice_GM": 0.9, "Dice_heterotopia": h, "Dice_deep_grey_enlargement": d} for h, d in ((0.8, 0.1), (0.6, 0.0))]
    scores.write_text(json.dumps({"budget": {"val_curve": CURVE}, "scores": cases,
                                  "names": ["GM", "heterotopia", "deep_grey_enlargement"]}))
    pilot = study.pilot_budget(tmp_path, scale)
    assert pilot["test"] == pytest.approx({"GM": 0.9, "heterotopia": 0.7, "deep_grey_enlargement": 0.05})
    text = study.pilot_markdown(pilot)
    assert "On the 2 test cases" in text and "does not find deep_grey_enlargement (Dice under 0.1)" in text
    assert "| 0.900 | 0.700 | 0.050 |" in text
    cases[1]["Dice_deep_grey_enlargement"] = 0.3
    scores.write_text(json.dumps({"budget": {"val_curve": CURVE}, "scores": cases,
                                  "names": ["GM", "heterotopia", "deep_grey_enlargement"]}))
    assert "the host finds every lesion kind" in study.pilot_markdown(study.pilot_budget(tmp_path, scale))
    with pytest.raises(SystemExit, match="--budget-cap 40: --steps sets the budget itself"):
        study.main(["--quick", "--steps", "20", "--budget-cap", "40", "--out", str(tmp_path / "s"), "--dry-run"])
    with pytest.raises(SystemExit, match="--budget-cap 5: expected at least 10 steps"):
        study.main(["--quick", "--budget-cap", "5", "--out", str(tmp_path / "s"), "--dry-run"])


def test_ablations_on_chosen_cohorts_only(tmp_path):
    scale = study.SCALES["quick"]  # cohorts 4 and 8
    runs = study.plan_pretraining(tmp_path, scale, list(study.ARMS), seed=0, mirror_visible=0.25, swvit_arm=False,
                                  ablation_cohorts=[8])
    names = {run.name for run in runs}
    assert {"mae-c4", "mae-c8", "asa-c4", "asa-c8", "noise-c8"} <= names  # mae, asa and the control on every cohort
    variants = [arm for arm in study.ARMS if arm not in ("mae", "asa")]
    assert {f"{arm}-c8" for arm in variants} <= names
    assert not {f"{arm}-c4" for arm in variants} & names
    assert len(runs) == 2 * 2 + len(variants) + 1
    with pytest.raises(SystemExit, match="--ablation-cohorts 5: not a cohort"):
        study.plan_pretraining(tmp_path, scale, list(study.ARMS), seed=0, mirror_visible=0.25, ablation_cohorts=[5])


def test_contrasts_pair_runs_by_seed_and_case_and_skip_arms_not_run():
    lesions = {f"Dice_{k}": 0.0 for k in study.LESION_NAMES.values()}

    def row(arm, seed, case, dice):
        return {"arm": arm, "n": "8", "seed": str(seed), "case": case, "Dice_mean": str(dice), "NSD_mean": "0.5",
                **{k: str(v) for k, v in lesions.items()}}

    scores = [row(arm, seed, case, base + 0.01 * seed + (0.02 if case == "b" else 0.0))
              for arm, base in (("resenc-asa-c400", 0.60), ("resenc-asa-sharp-c400", 0.55),
                                ("resenc-mae-c400", 0.50), ("resenc-mae-c40", 0.52), ("resenc-supervised", 0.70),
                                (study.REFERENCE, 0.45))
              for seed in (0, 1) for case in ("a", "b")]
    rows = study.contrast_rows(scores, (40, 400), n_boot=200)
    by = {(r["arm"], r["reference"]): r for r in rows}
    attentive = by[("resenc-asa-c400", "resenc-mae-c400")]
    assert attentive["Dice_mean"][0] == pytest.approx(0.10) and attentive["per_seed"] == pytest.approx([0.10, 0.10])
    assert attentive["Dice_mean"][1] == pytest.approx(0.10) and attentive["Dice_mean"][2] == pytest.approx(0.10)
    assert attentive["NSD_mean"][0] == 0.0 and attentive["lesion"][0] == 0.0
    assert by[("resenc-asa-sharp-c400", "resenc-mae-c400")]["Dice_mean"][0] == pytest.approx(0.05)
    assert by[("resenc-supervised", study.REFERENCE)]["Dice_mean"][0] == pytest.approx(0.25)  # the positive control
    assert by[("resenc-mae-c400", "resenc-mae-c40")]["Dice_mean"][0] == pytest.approx(-0.02)  # largest − smallest
    assert ("resenc-asa-mirror-c400", "resenc-asa-c400") not in by  # not run: no row
    assert "| the attentive loss at the paper's granularity" in study.contrast_table(rows)
    assert "| the positive control" in study.contrast_table(rows)
