"""Same-seed fingerprints of the pretrain -> fine-tune chain, for behaviour-preserving changes.

Runs, for each path (ASA, ASA with RAT's region attention, SA-Swin, and ASA with a case head), a tiny
pretraining on the demo phantoms and a fine-tuning of its encoder on demo IBSR phantoms (the case path:
a diagnosis head on demo BIDS phantoms with targets), then prints one JSON object with
every logged training loss and the SHA-256 of each run's final weights (also written to
``--out``/chain.json). Run it before and after a restructuring on the same machine: equal output
means the change kept the numbers.

    python scripts/chain_hashes.py --out /tmp/chain_before
    diff /tmp/chain_before/chain.json /tmp/chain_after/chain.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asa.api import finetune, load_config, pretrain
from asa.data import write_demo_dataset
from asa.io import load_checkpoint

PATHS = {  # name -> (pretraining overrides, fine-tuning overrides, fine-tuning crop); data=ibsr unless given
    "asa": (["experiment=asa"], ["model=tiny"], 32),
    "rat": (["experiment=rat_asa"], ["model=tiny", "model.region_attention=alternate", "data.regions.source=cluster"],
            32),
    "sa_swin": (["experiment=sa_swin"], ["model=sa_swin"], 64),  # SwinUNETR's bottleneck needs 64³ (2³)
    "case": (["experiment=asa"], ["data=targets", "model=tiny", "task=case", "task.target=diagnosis",
                                   "data.accept_pretraining_overlap=true"], 32),  # the demo phantoms share ids
}


def weights_hash(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's model tensors, in key order."""
    state = load_checkpoint(checkpoint)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def losses(run: Path) -> list[float]:
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [round(e.value, 7) for e in events.Scalars("train/loss")] if "train/loss" in events.Tags()["scalars"] else []


def chain(name: str, out: Path, steps: int) -> dict:
    pre_overrides, ft_overrides, crop = PATHS[name]
    pre = load_config("pretrain", "model=tiny", "trainer=smoke", *pre_overrides)
    pre.output_dir, pre.device, pre.seed = str(out / name / "pre"), "cpu", 0
    pre.probe.every = 0
    pre.trainer.max_steps = steps
    pre.data.crop, pre.data.demo.size, pre.data.demo.cases = 32, 40, 6
    pre.data.demo.cache_dir = str(out / "cache")
    pretrain(pre)
    case = "data=targets" in ft_overrides
    root = (write_demo_dataset("bids", out / name / "bids", cases=12, size=crop + 8, seed=1, targets=True) if case
            else write_demo_dataset("ibsr", out / name / "ibsr", cases=5, size=crop + 8, seed=1))
    ft = load_config("finetune", *([] if case else ["data=ibsr"]), "trainer=smoke", *ft_overrides)
    ft.output_dir, ft.device, ft.seed = str(out / name / "ft"), "cpu", 0
    ft.data.root, ft.data.num_workers, ft.data.crop = str(root), 0, crop
    ft.model.pretrained = str(out / name / "pre" / "checkpoints" / "encoder.pt")
    ft.data.accept_pretraining_overlap = case  # the demo BIDS phantoms reuse the pretraining phantoms' ids
    ft.trainer.max_steps, ft.trainer.epochs = steps, steps
    finetune(ft)
    runs = {"pretrain": out / name / "pre", "finetune": out / name / "ft"}
    return {stage: {"losses": losses(run), "weights": weights_hash(run / "checkpoints" / "last.pt")}
            for stage, run in runs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--steps", type=int, default=3, help="optimisation steps per run")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"--out {args.out}: not empty; give a new folder")
    result = {name: chain(name, args.out, args.steps) for name in args.paths}
    text = json.dumps(result, indent=1, sort_keys=True)
    (args.out / "chain.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
