#!/usr/bin/env python
"""How far ASA's attentive weights are from uniform on the masked residual-encoder U-Net and on the SW-ViT: the
weights' coefficient of variation and effective share (`asa.losses.reconstruction.weight_spread`) under each weight
granularity and sharpening, on template-anatomy subjects, at the CNN study's geometry (crops of volumes the
brain fills) and at the paper's (a 128³ crop holding the whole head and its background).

A weighting whose CV is about 0.1 is uniform in all but name: a study cannot read a null from it.

    python scripts/weight_spread.py                        # both geometries, 4 subjects, 8 masks each
    python scripts/weight_spread.py --geometry 48:32 --subjects 2
    python scripts/weight_spread.py --network resenc swvit --units 4 8 --powers 1 2 4 --geometry 48:32 48:48
                                       # a grid: crop × unit (resenc: model.weight_patch; swvit: the patch) × γ
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from asa.data import build_pretrain_dataset, discover, write_anatomy_dataset
from asa.io import load_volume
from asa.losses import patch_informativeness
from asa.losses.reconstruction import masked_patch_weights, weight_spread
from asa.models import PRESETS, build_network

# name -> the masked network's weighting options (None: the mask block itself, the form before weight_patch)
WEIGHTINGS = {
    "one weight per mask block (total stride, earlier)": {"mask_block": None, "weight_patch": None},
    "per 8³ unit, 16³ blocks (paper's granularity)": {"mask_block": 16, "weight_patch": 8},
    "per 8³ unit, 16³ blocks, γ = 2": {"mask_block": 16, "weight_patch": 8, "weight_power": 2.0},
    "per 8³ unit, 16³ blocks, γ = 4": {"mask_block": 16, "weight_patch": 8, "weight_power": 4.0},
    "per 8³ unit, 16³ blocks, γ = 8": {"mask_block": 16, "weight_patch": 8, "weight_power": 8.0},
}


def pipeline_crops(folder: Path, crop: int) -> torch.Tensor:
    """The crops asa-pretrain trains on: each subject's brain-centred crop, z-scored in the brain
    (`asa.data.build_pretrain_dataset` without augmentation), [N, 1, c, c, c]."""
    cases = discover("filelist", folder)
    data = build_pretrain_dataset(cases, crop=crop, augment=False, seed=0)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def crops(volumes: list[torch.Tensor], crop: int, per_volume: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops [N, 1, c, c, c] of the volumes, each volume's intensities z-scored over its nonzero voxels
    (background stays 0, as the pretraining preprocessing leaves it constant)."""
    out = []
    for v in volumes:
        brain = v != 0
        v = torch.where(brain, (v - v[brain].mean()) / v[brain].std(), torch.zeros_like(v))
        for _ in range(per_volume):
            start = [int(torch.randint(0, s - crop + 1, (1,), generator=generator)) for s in v.shape]
            out.append(v[start[0]:start[0] + crop, start[1]:start[1] + crop, start[2]:start[2] + crop])
    return torch.stack(out)[:, None]


def spread(x: torch.Tensor, crop: int, size: str, options: dict, masks: int) -> dict[str, float]:
    """Mean CV and effective share of the attentive weights over ``masks`` random masks of the batch ``x``."""
    torch.manual_seed(0)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": crop, "size": size, **options}})
    cv, share = [], []
    with torch.no_grad():
        for _ in range(masks):
            mask = net.random_masking(x.shape[0], x.device)
            _, weights = net.forward_loss(x, torch.zeros_like(x), mask)
            s = weight_spread(weights, net.weight_units(mask))
            cv.append(s["cv"])
            share.append(s["effective_share"])
    return {"cv": sum(cv) / masks, "effective_share": sum(share) / masks, "block": net.block,
            "unit": net.weight_patch, "units_masked": int(net.weight_units(mask)[0].sum())}


def swvit_spread(x: torch.Tensor, crop: int, patch: int, power: float, masks: int) -> dict[str, float]:
    """The same for the SW-ViT (`tiny`, the weights do not depend on its size) with patch edge ``patch``: one
    weight per masked patch, p ∝ Ḡ^γ (γ = ``power``; the SW-ViT's loss takes γ = 1, the paper's, and the
    weights for γ ≠ 1 are computed here from its Ḡ as the ResEnc twin's ``weight_power`` computes them)."""
    torch.manual_seed(0)
    net = build_network({"arch": "asa_pretrain", "kwargs": {"img_size": crop, **PRESETS["tiny"], "patch_size": patch,
                                                             "loss_weighting": "attentive"}})
    g = patch_informativeness(x, patch, net.objective.bins, net.objective.normalize).pow(power)  # [B, N]
    cv, share = [], []
    for _ in range(masks):
        mask, _ = net.random_masking(x.shape[0], x.device)
        s = weight_spread(masked_patch_weights(mask, g), mask)
        cv.append(s["cv"])
        share.append(s["effective_share"])
    return {"cv": sum(cv) / masks, "effective_share": sum(share) / masks, "block": patch, "unit": patch,
            "units_masked": int(mask[0].sum())}


def grid(networks: list[str], units: list[int], powers: list[float]) -> list[tuple[str, str, dict]]:
    """(network, name, options) of every unit × γ per network; a ResEnc unit is ``model.weight_patch`` under its
    study's 16³ mask blocks, an SW-ViT unit its patch (token) edge."""
    return [(net, f"{net}, unit {u}³, γ = {g:g}", {"unit": u, "power": g})
            for net in networks for u in units for g in powers]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--geometry", nargs="+", default=["48:32", "128:128"], metavar="VOLUME:CROP",
                   help="subject grid edge : crop edge (default: the CNN study's 48:32 and the paper's 128:128)")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--placement", choices=("pipeline", "random"), default="pipeline",
                   help="pipeline (default): the brain-centred crop asa-pretrain trains on; random: crops anywhere "
                        "in the volume, background included")
    p.add_argument("--crops", type=int, default=2, help="random placement: crops per subject (default 2)")
    p.add_argument("--masks", type=int, default=8, help="random masks per crop batch (default 8)")
    p.add_argument("--size", default="tiny", help="ResEnc size (the weights do not depend on it; default tiny)")
    p.add_argument("--network", nargs="+", choices=("resenc", "swvit"),
                   help="a grid instead of the named weightings: these networks × --units × --powers")
    p.add_argument("--units", type=int, nargs="+", default=[8],
                   help="with --network: the weight units (resenc: model.weight_patch, dividing the 16³ mask block; "
                        "swvit: the patch edge, dividing the crop; default 8)")
    p.add_argument("--powers", type=float, nargs="+", default=[1.0],
                   help="with --network: the weights' exponents γ (resenc: model.weight_power; default 1)")
    args = p.parse_args(argv)
    if args.network is None:
        weightings = [("resenc", name, options) for name, options in WEIGHTINGS.items()]
    else:
        weightings = grid(args.network, args.units, args.powers)
    rows = []
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for geometry in args.geometry:
            volume, crop = (int(v) for v in geometry.split(":"))
            folder = Path(tmp) / f"v{volume}"  # one cohort per subject grid, shared by its crops
            if not folder.exists():
                write_anatomy_dataset("filelist", folder, cases=args.subjects, size=volume, seed=0)
            if args.placement == "pipeline":
                x = pipeline_crops(folder, crop)
            else:
                volumes = [torch.from_numpy(load_volume(f).array.astype("float32"))
                           for f in sorted(folder.rglob("*.nii.gz"))]
                x = crops(volumes, crop, args.crops if crop < volume else 1, generator)
            for network, name, options in weightings:
                if network == "swvit":
                    r = swvit_spread(x, crop, options["unit"], options["power"], args.masks)
                elif "unit" in options:
                    r = spread(x, crop, args.size, {"mask_block": 16, "weight_patch": options["unit"],
                                                    "weight_power": options["power"]}, args.masks)
                else:
                    r = spread(x, crop, args.size, options, args.masks)
                rows.append({"network": network, "volume": volume, "crop": crop, "placement": args.placement,
                             "weighting": name, "power": options.get("power", options.get("weight_power", 1.0)), **r})
                print(f"{volume}³ → {crop}³ {args.placement}  {name:52s} block {r['block']:3d} unit {r['unit']:3d} "
                      f"masked units {r['units_masked']:4d}  CV {r['cv']:.3f}  effective share "
                      f"{r['effective_share']:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
