"""The 2026-11-27 re-read's numbers beside its page: every contrast, each pretraining run's plateau (one-point and
median readings), per-draw differences, stage times. Run: python readout.py <the study folder>."""
import json, math, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, csv
from asa.io import load_checkpoint
from asa.study.readout import optimiser_progress, loss_plateau

out = Path(sys.argv[1])  # the study folder
for r in json.load(open(out / "report/contrasts.json")):
    e = r.get("lesion_Dice") or [math.nan] * 3
    print(f"{r['arm']:>14} - {r['reference']:<10} n={r['n']} {r['kind']:>9} {r.get('role','')}: "
          f"{e[0]:+.3f} [{e[1]:+.3f}, {e[2]:+.3f}] p={r.get('p', math.nan):.3f} holm={r.get('p_holm', math.nan):.3f} "
          f"bound90={[round(x, 3) for x in r.get('bound90', [])]} mde={r.get('mde', math.nan):.3f} verdict={r.get('verdict')}")

def old(losses, at, tol=0.02):
    n = len(losses); first = min(max(1, int(np.searchsorted(at, 0.75 * at[-1], side="right"))), n - 1)
    start = losses[first - 1]; drop = (start - min(losses[first:])) / start; rise = (losses[-1] - min(losses)) / min(losses)
    return drop, rise

for run in sorted((out / "pretrain").iterdir()):
    ck = run / "checkpoints/last.pt"
    if not ck.exists() or run.name.startswith("supervised"):
        continue
    st = load_checkpoint(ck)
    curve = [(int(h.get("step", i)), float(h["val/loss"])) for i, h in enumerate(st.get("history", [])) if "val/loss" in h]
    at = np.array(optimiser_progress([s for s, _ in curve], st["scheduler"]))
    loss = [v for _, v in curve]
    new = loss_plateau(loss, progress=list(at)); d, r = old(loss, at)
    print(f"{run.name:>14}: steps {st['step']} first {loss[0]:.4f} last {loss[-1]:.4f} | median reading drop {new['loss_drop']:+.2%} "
          f"rise {new['loss_rise']:+.2%} plateau {new['plateau']} | one-point drop {d:+.2%} rise {r:+.2%}")

rows = list(csv.DictReader(open(out / "transfer/scores.csv")))
def mean_by(arm_group):
    m = {}
    for x in rows:
        if x["group"] == arm_group:
            m.setdefault((x["seed"], x["repeat"], x["replicate"]), []).append(float(x["lesion_Dice"]))
    return m
groups = sorted({x["group"] for x in rows})
print("groups", groups)
sc = {}
for x in rows:
    sc.setdefault(x["group"], {}).setdefault((x["seed"], x["repeat"]), {}).setdefault(x["replicate"], {})[x["case"]] = float(x["lesion_Dice"])
for g in groups:
    per = {k: np.mean([np.mean(list(v.values())) for v in reps.values()]) for k, reps in sc[g].items()}
    print(f"{g:>12} mean lesion Dice by draw: " + " ".join(f"{per[k]:.3f}" for k in sorted(per, key=lambda k: int(k[0]))) + f" | all {np.mean(list(per.values())):.3f}")
t = json.load(open(out / "times.json"))
print({k: round(v / 60, 1) for k, v in t["stages"].items()})
