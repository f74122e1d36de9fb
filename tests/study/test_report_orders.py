"""One study, its arms named in two orders (``--arms mae asa noise supervised`` and ``--arms supervised noise asa
mae``): the transfer stage's rows and the pretraining runs arrive in the order the arms were named, the page does not
depend on it."""
from __future__ import annotations

import math
from pathlib import Path

from asa.study import report, tables

CLASSES = ["CSF", "lesion"]
MACHINE = {"cpu": "test", "usable_cores": 1, "cpu_count": 1, "torch_threads": 1, "torch": "2", "gpu": None}
# run name -> (arm, cohort, replicate, Δ Dice), in the arms' declared order (`asa.study.arms.ARMS`): two pretraining
# runs per arm, as a study pretrains them
ARMS = {"scratch": ("scratch", None, 0, 0.0), "supervised": ("supervised", None, 0, 0.12),
        "noise-c4": ("noise", 4, 0, 0.001), "noise-c4-p1": ("noise", 4, 1, -0.002), "mae-c4": ("mae", 4, 0, 0.03),
        "mae-c4-p1": ("mae", 4, 1, 0.05), "asa-c4": ("asa", 4, 0, 0.04), "asa-c4-p1": ("asa", 4, 1, 0.02)}


def _planned(named: list[str]) -> list[str]:
    """The fine-tuned arms in the order asa-study plans them for ``--arms named``: the scratch twin, the positive
    control, then every pretraining run, each arm's replicates in turn."""
    return ["scratch", *(["supervised"] if "supervised" in named else []),
            *(run for arm in named for run in ARMS if ARMS[run][0] == arm and ARMS[run][1] is not None)]


def _rows(order: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """(score rows, budgets, pretraining runs) of the runs ``order`` names, in its order (N, then seed, then arm)."""
    scores, budgets = [], []
    for n in (2,):
        for seed in (0, 1, 2):
            for run in order:
                arm, cohort, replicate, delta = ARMS[run]
                for k, case in enumerate("abcdef"):
                    d = delta * (1 + 0.3 * math.sin(7 * k + seed + n)) + 0.01 * n
                    dice = {"CSF": 0.6 + 0.01 * k + d, "lesion": 0.3 + 0.02 * seed + d}
                    scores.append({"arm": run, "n": n, "seed": seed, "case": case,
                                   **{f"Dice_{c}": v for c, v in dice.items()}, "Dice_mean": sum(dice.values()) / 2,
                                   **{f"NSD_{c}": 0.5 + d for c in CLASSES}, **{f"Dice_{c}_zeroed": 0.1 for c in CLASSES},
                                   "NSD_mean": 0.5 + d, "Dice_mean_zeroed": 0.1, "encoder_arm": arm,
                                   "cohort": "" if cohort is None else cohort, "replicate": replicate,
                                   "group": arm if cohort is None else f"{arm}-c{cohort}"})
                budgets.append({"arm": run, "n": n, "seed": seed, "steps": 40, "train": f"c{seed} c{seed + n}",
                                "final_loss": 0.5, "loss_drop": 0.01, "plateau": True, "rel_update_encoder": 0.01,
                                "rel_update_decoder": 0.02, "rel_update_ratio": 0.5,
                                "train_seconds": 10.0 + len(run) + n + seed})
    pretraining = [{"run": run, "arm": ARMS[run][0], "cohort": 4, "steps": 50, "seconds": 20.0 + len(run),
                    "val_curve": [[10, 0.9], [50, 0.8 - 0.01 * len(run)]], "plateau": True,
                    "loss_drop": 0.01, "loss_rise": 0.0} for run in order if ARMS[run][1] is not None]
    return scores, budgets, pretraining


def _page(out: Path, named: list[str]) -> str:
    """README.md of the study with ``--arms named``: its transfer outputs, then its report."""
    scores, budgets, pretraining = _rows(_planned(named))
    scored = tables.write_outputs(scores, CLASSES, {r: "scratch" for r in ARMS}, out / "transfer", n_boot=100,
                                  budgets=budgets)
    info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-25T22:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2}, "steps": 40,
            "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": CLASSES, "lesion_classes": [],
            "pilot": {"test": {c: 0.7 for c in CLASSES}}, "pretraining": pretraining, "encoders": [],
            "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": ["asa-study ..."],
            "runs": {"pilot": 30.0}}
    return (report.write_report(out, info, scored, n_boot=100) / "README.md").read_text()


def test_the_order_the_arms_are_named_in_leaves_the_page_as_it_is(tmp_path):
    first, second = ["mae", "asa", "noise", "supervised"], ["supervised", "noise", "asa", "mae"]
    assert _planned(first) != _planned(second)  # the rows arrive in two orders
    page = _page(tmp_path / "first", first)
    assert page == _page(tmp_path / "second", second)
    # each table that lists the arms lists them in their declared order, replicates in turn
    for part, kind in (("## Pretraining", ""), ("## Cost", "pretraining"), ("## Cost", "fine-tuning"),
                       ("## Transfer (every arm)", "")):
        section = page.split(part)[1].split("\n## ")[0]
        cells = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ")]
        listed = [r for r in dict.fromkeys(name.split()[0] for name, what in cells if kind in what) if r in ARMS]
        assert len(listed) > 1 and listed == [r for r in ARMS if r in listed], (part, kind)
