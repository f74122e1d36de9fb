#!/usr/bin/env python
"""How much of the fine-tuning gradient reaches the transformer encoder: ``ASASegmenter`` against
MONAI's UNETR of the same crop and width, on one batch, under the Dice + CE loss (Dice over
every class, background included, as when its numbers were taken).

For each network it prints, per module group (patch embedding, each encoder block, the final
norm, each decoder part), the gradient norm ``‖g‖``, the per-weight RMS gradient ``‖g‖/√n`` and the
group's share of the gradient ``‖g‖ / ‖g_all‖``; then the encoder / decoder summary: their norms,
their per-weight RMS and ``rms ratio`` = encoder RMS / decoder RMS. ``--steps`` runs the paper's
fine-tuning SGD (one lr, Nesterov momentum) on the same batch and prints the relative update
``‖Δw‖/‖w‖`` of encoder and decoder.

    python scripts/gradient_share.py                      # IBSR-like phantoms, 32³, tiny preset
    python scripts/gradient_share.py --data random --steps 0
"""

from __future__ import annotations

import argparse
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from asa.data.synthetic.phantom import make_phantom
from asa.data.preprocessing import normalize_in_brain
from asa.losses import SegmentationLoss
from asa.models import PRESETS, build_segmentation_network

ENCODER = {"swvit_unetr": "encoder.", "unetr": "vit."}  # the transformer encoder's parameter prefix


def make_batch(data: str, batch: int, crop: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, 1, crop³] and labels [B, 1, crop³] (int64): z-scored T1 phantoms with their tissue
    classes (``phantom``, IBSR: background, CSF, GM, WM), or Gaussian noise with a label that is a
    function of it (``random``)."""
    if data == "phantom":
        images, labels = [], []
        for i in range(batch):
            ph = make_phantom(crop, seed=seed * 1000 + i)
            images.append(normalize_in_brain(ph.images["t1"][None], ph.brain_mask))
            labels.append(np.minimum(ph.tissue, classes - 1)[None])
        return torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(labels)).long()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, crop, crop, crop, generator=gen)
    edges = torch.linspace(-1.0, 1.0, classes - 1)
    return x, torch.bucketize(x, edges)  # class = intensity bin


def build(arch: str, crop: int, classes: int, preset: str, feature_size: int, seed: int) -> nn.Module:
    """The tiny-preset ASASegmenter or a UNETR of the preset's width, MLP ratio 4 and heads."""
    sizes = PRESETS[preset]
    torch.manual_seed(seed)
    if arch == "swvit_unetr":
        kwargs = {k: sizes[k] for k in ("embed_dim", "depth", "num_heads", "window_size")}
    else:
        dim = sizes["embed_dim"]
        kwargs = dict(hidden_size=dim, mlp_dim=4 * dim, num_heads=sizes["num_heads"], norm_name="instance",
                      res_block=True)
    return build_segmentation_network(arch, img_size=(crop,) * 3, in_channels=1, out_channels=classes,
                                      feature_size=feature_size, **kwargs)


def group_of(name: str, prefix: str) -> str:
    """``encoder.blocks.3.attn.qkv.weight`` -> ``encoder.blocks.3``; ``up1.conv...`` -> ``up1``; a learned
    position code is a group of its own."""
    parts = name.split(".")
    if parts[-1] == "position_embeddings":  # UNETR's learned position code (ASA's is a fixed buffer)
        return ".".join(parts[:-1]) + ".pos"
    if name.startswith(prefix):
        return ".".join(parts[:3]) if parts[1] == "blocks" else ".".join(parts[:2])
    return parts[0]


def gradients(net: nn.Module, prefix: str, x: torch.Tensor, y: torch.Tensor) -> OrderedDict[str, tuple[float, int]]:
    """Per group: (sum of squared gradients, number of weights) of the loss on (x, y)."""
    net.zero_grad()
    SegmentationLoss(multilabel=False, dice_background=True)(net(x), y).backward()
    groups: OrderedDict[str, tuple[float, int]] = OrderedDict()
    for name, p in net.named_parameters():
        if p.grad is None:
            continue
        key = group_of(name, prefix)
        sq, n = groups.get(key, (0.0, 0))
        groups[key] = (sq + p.grad.double().pow(2).sum().item(), n + p.numel())
    return groups


def summarise(groups: OrderedDict[str, tuple[float, int]], prefix: str) -> dict[str, float]:
    """Encoder and decoder totals: norms, per-weight RMS and their ratio."""
    enc = [v for k, v in groups.items() if k.startswith(prefix)]
    dec = [v for k, v in groups.items() if not k.startswith(prefix)]
    out = {}
    for part, values in (("encoder", enc), ("decoder", dec)):
        sq, n = sum(v[0] for v in values), sum(v[1] for v in values)
        out[f"{part}_norm"], out[f"{part}_rms"], out[f"{part}_weights"] = math.sqrt(sq), math.sqrt(sq / n), n
    out["rms_ratio"] = out["encoder_rms"] / out["decoder_rms"]
    out["encoder_share"] = out["encoder_norm"] / math.hypot(out["encoder_norm"], out["decoder_norm"])
    return out


def relative_update(net: nn.Module, prefix: str, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                    momentum: float) -> dict[str, float]:
    """‖Δw‖/‖w‖ of encoder and decoder after ``steps`` SGD steps (Nesterov, one lr, weight decay 3e-5)."""
    start = {k: p.detach().clone() for k, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=3e-5)
    loss_fn = SegmentationLoss(multilabel=False, dice_background=True)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    sums = {"encoder": [0.0, 0.0], "decoder": [0.0, 0.0]}
    for k, p in net.named_parameters():
        part = sums["encoder" if k.startswith(prefix) else "decoder"]
        part[0] += (p.detach() - start[k]).double().pow(2).sum().item()
        part[1] += start[k].double().pow(2).sum().item()
    return {part: math.sqrt(d / w) for part, (d, w) in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=32, help="crop edge in voxels (a multiple of 16)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="encoder sizes")
    parser.add_argument("--feature-size", type=int, default=16, help="decoder width of both networks")
    parser.add_argument("--data", default="phantom", choices=("phantom", "random"),
                        help="IBSR-like phantoms (4 classes) or Gaussian noise with an intensity-bin label")
    parser.add_argument("--classes", type=int, default=4, help="output classes")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds both the batch and the weights")
    parser.add_argument("--steps", type=int, default=40, help="SGD steps for the relative update (0: skip)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--arch", nargs="+", default=["swvit_unetr", "unetr"], choices=sorted(ENCODER))
    args = parser.parse_args()
    if args.crop % 16:
        parser.error(f"--crop {args.crop}: UNETR's patch is 16, so the crop must be a multiple of 16")
    x, y = make_batch(args.data, args.batch, args.crop, args.classes, args.seed)
    for arch in args.arch:
        prefix = ENCODER[arch]
        net = build(arch, args.crop, args.classes, args.preset, args.feature_size, args.seed)
        groups = gradients(net, prefix, x, y)
        total = math.sqrt(sum(sq for sq, _ in groups.values()))
        print(f"\n== {arch} ({sum(n for _, n in groups.values())} weights)")
        print(f"{'group':<22}{'weights':>10}{'grad norm':>12}{'rms/weight':>12}{'share':>10}")
        for key, (sq, n) in groups.items():
            print(f"{key:<22}{n:>10}{math.sqrt(sq):>12.3e}{math.sqrt(sq / n):>12.3e}{math.sqrt(sq) / total:>10.2e}")
        s = summarise(groups, prefix)
        print(f"encoder: norm {s['encoder_norm']:.3e}, rms {s['encoder_rms']:.3e} | decoder: norm "
              f"{s['decoder_norm']:.3e}, rms {s['decoder_rms']:.3e} | encoder share {s['encoder_share']:.2e}, "
              f"rms ratio enc/dec {s['rms_ratio']:.3e}")
        if args.steps:
            rel = relative_update(net, prefix, x, y, args.steps, args.lr, args.momentum)
            print(f"after {args.steps} SGD steps (lr {args.lr}, Nesterov {args.momentum}): ‖Δw‖/‖w‖ encoder "
                  f"{rel['encoder']:.3e}, decoder {rel['decoder']:.3e}")


if __name__ == "__main__":
    main()
