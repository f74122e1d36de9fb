#!/usr/bin/env python
"""What the block puzzles learn: pretext accuracy of finished RPL / Jigsaw runs on their validation volumes.

For each ``asa-pretrain`` run folder (``experiment=rpl`` or ``jigsaw``) the network of
``checkpoints/last.pt`` solves ``--draws`` puzzles per validation volume (fresh jitters, neighbours or
permutations, and the run's own ``method.shift`` / ``method.block_norm``), in eval mode. For Jigsaw it
also gives a solver without a network: each block's mean brightness against the mean brightness of
each cell over the training volumes (the permutation whose cells fit the shown blocks best), which
tells how much of the puzzle a block's place in the crop gives away.

    python scripts/puzzle_pretext.py runs/jigsaw runs/rpl --draws 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asa.api.machinery.dataset import dataset_root
from asa.data import build_pretrain_dataset, discover
from asa.io import load_checkpoint
from asa.models import build_network
from asa.models.heads.puzzles import JigsawPuzzle, normalise_blocks, shuffle_blocks


def _volumes(run: Path, subset: str) -> torch.Tensor:
    """The run's ``subset`` volumes as it cropped them (brain-centred, no augmentation): [N, C, D, D, D]."""
    cfg = OmegaConf.load(run / "config.yaml")
    root, layout = dataset_root(cfg.data)
    wanted = set(json.loads((run / "splits.json").read_text())[subset])
    cases = [c for c in discover(layout, root, on_bad_case="skip") if c.id in wanted]
    data = build_pretrain_dataset(cases, size=int(cfg.data.crop), augment=False, channels=tuple(cfg.data.channels),
                                  resample_mm=cfg.data.resample_mm)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def _block_means(net: JigsawPuzzle, x: torch.Tensor) -> torch.Tensor:
    """x [N, C, D, D, D] -> the mean of every block at a fresh jitter (and shift), as the network sees it: [N, K, C]."""
    blocks = net.random_blocks(x)  # [N, K, C, b, b, b]
    if net.block_norm:
        blocks = normalise_blocks(blocks.flatten(0, 1)).view(blocks.shape)
    return blocks.mean((-3, -2, -1))


def brightness_accuracy(net: JigsawPuzzle, train: torch.Tensor, val: torch.Tensor, draws: int) -> float:
    """Share of Jigsaw puzzles of ``val`` solved from block mean brightness alone (no network)."""
    centroid = torch.stack([_block_means(net, train) for _ in range(draws)]).mean((0, 1))  # [K, C]
    perms = net.permutations  # [P, K]
    hits = []
    for _ in range(draws):
        means = _block_means(net, val)  # [N, K, C]
        target = torch.randint(0, len(perms), (len(val),))
        shown = shuffle_blocks(means, perms[target])  # slot i shows block perm[i]
        cost = (shown[:, None] - centroid[perms][None]).abs().sum((-1, -2))  # [N, P]
        hits.append(cost.argmin(1) == target)
    return torch.cat(hits).float().mean().item()


def network_accuracy(net: torch.nn.Module, val: torch.Tensor, draws: int) -> float:
    """Share of the network's puzzles on ``val`` it names right (eval mode, fresh draws)."""
    with torch.no_grad():
        return sum(net(val).accuracy.item() for _ in range(draws)) / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="asa-pretrain run folders of experiment=rpl or jigsaw")
    parser.add_argument("--draws", type=int, default=50, help="puzzles per validation volume")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| run | method | shift | block_norm | network accuracy | brightness alone (no network) |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    for run in args.runs:
        state = load_checkpoint(run / "checkpoints" / "last.pt")
        net = build_network(state["network"])
        net.load_state_dict(state["model"])
        net.eval()
        torch.manual_seed(args.seed)
        val = _volumes(run, "val")
        acc = network_accuracy(net, val, args.draws)
        alone = brightness_accuracy(net, _volumes(run, "train"), val, args.draws) \
            if isinstance(net, JigsawPuzzle) else None
        kwargs = state["network"]["kwargs"]
        print(f"| {run.name} | {state['network']['arch'].removesuffix('_pretrain')} | {kwargs.get('shift', 0)} | "
              f"{str(kwargs.get('block_norm', False)).lower()} | {acc:.3f} | "
              f"{'—' if alone is None else f'{alone:.3f}'} |", flush=True)


if __name__ == "__main__":
    main()
