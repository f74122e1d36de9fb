"""One network, two predictors: lesion Dice between `asa-predict` and `nnUNetv2_predict` on the folder that
`asa-export --format nnunet-results` writes of the same fine-tuned ResEnc U-Net, per held-out case.

The cases are built without asa's demo generator: `benchmarks.outside_data.lesion_case` (nilearn's MNI152 2009
template under a random affine and warp, bias, Rician noise, 1-3 white-matter lesions, skull-stripped), each at its
own isotropic voxel size drawn from ``--spacings`` and in one of the 48 voxel orientations. ``--train`` cases train
the network (asa-finetune, an nnU-Net raw folder read by asa's ``msd`` preset, all of them in the training split),
``--test`` others are predicted by both:

- `asa-predict` (``checkpoint=<run>/checkpoints/last.pt``, its defaults: no test-time flips);
- ``nnUNetv2_predict -d <id> -c 3d_fullres -f all --disable_tta -device cpu`` with ``$nnUNet_results`` holding the
  export as ``Dataset<id>_<name>/nnUNetTrainer__nnUNetPlans__3d_fullres``, as nnU-Net's users run it.

Printed and written to ``OUT/agreement-<name>.json`` (``--name``, default ``run``): per case its voxel size, the lesion Dice between the two predictors'
label maps, and each one's lesion Dice against the truth; the mean and the worst. A case where both predict no
lesion scores 1 (BraTS' convention, `asa.eval.metrics.dice`).

    python -m benchmarks.nnunet_agreement --out /tmp/agreement --device cuda --workers 12   # 1500 steps of ResEnc S
    python -m benchmarks.nnunet_agreement --out /tmp/agreement --checkpoint RUN/checkpoints/last.pt  # predictions only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.outside_data import lesion_case

DATASET_ID = 501
# nnUNetv2_predict's console entry, run by this interpreter (the same code as the nnUNetv2_predict script)
NNUNET_PREDICT = "from nnunetv2.inference.predict_from_raw_data import predict_entry_point; predict_entry_point()"


def write_cases(root: Path, *, train: int, test: int, spacings: tuple[float, float], seed: int,
                spacing_seed: int = 123) -> dict[str, float]:
    """``root/data`` (an nnU-Net raw folder of ``train`` lesion cases: imagesTr, labelsTr, dataset.json) and
    ``root/test/{images,labels}`` (``test`` others, ``<case>_0000.nii.gz`` and ``<case>.nii.gz``); returns each
    case's voxel edge in mm. Case ``i`` is `lesion_case` of seed ``seed + i`` at an edge drawn uniformly from
    ``spacings`` (rounded to 0.001 mm; the draws seeded with ``spacing_seed``)."""
    rng = np.random.default_rng(spacing_seed)
    folders = {"imagesTr": root / "data" / "imagesTr", "labelsTr": root / "data" / "labelsTr",
               "images": root / "test" / "images", "labels": root / "test" / "labels"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    edges = {}
    for i in range(train + test):
        edge = float(np.round(rng.uniform(*spacings), 3))
        volume, label, affine, _ = lesion_case(seed + i, spacing=edge)
        case = f"case_{i:03d}"
        image_dir, label_dir = (folders["imagesTr"], folders["labelsTr"]) if i < train else (folders["images"],
                                                                                            folders["labels"])
        nib.save(nib.Nifti1Image(volume, affine), str(image_dir / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(label_dir / f"{case}.nii.gz"))
        edges[case] = edge
    meta = {"name": "outside lesions at mixed voxel sizes", "channel_names": {"0": "T1"},
            "labels": {"background": 0, "lesion": 1}, "numTraining": train, "file_ending": ".nii.gz"}
    (root / "data" / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return edges


def finetune_run(root: Path, *, steps: int, crop: int, size: str, seed: int, device: str = "cpu",
                 workers: int = 0, overrides: tuple[str, ...] = (), name: str = "run") -> Path:
    """asa-finetune of a ResEnc U-Net on ``root/data`` (every case in training, asa's default recipe, no
    validation, then ``overrides``) for ``steps`` optimiser steps on ``device`` into ``root/name``; returns its
    ``last.pt``."""
    from asa.api import finetune
    from asa.api.config import compose_config

    cases = len(list((root / "data" / "imagesTr").glob("*.nii.gz")))
    per_epoch = max(1, cases // 2)
    run = root / name
    finetune(compose_config("finetune", [
        "data=msd", f"data.root={root / 'data'}", "model=resenc", f"model.size={size}", f"data.crop={crop}",
        f"output_dir={run}", f"device={device}", f"data.num_workers={workers}", f"data.split.ratios=[{cases},0,0]",
        f"trainer.epochs={-(-steps // per_epoch)}", f"trainer.max_steps={steps}", "trainer.amp=off",
        "trainer.progress=false", "trainer.log_every=25", f"seed={seed}", *overrides]))
    return run / "checkpoints" / "last.pt"


def lesion_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two lesion masks; 1 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def measure(root: Path, checkpoint: Path, *, spacing: list[float] | None = None) -> dict:
    """Export ``checkpoint``, predict ``root/test/images`` with both predictors and compare; the record."""
    from asa.api import predict
    from asa.api.config import compose_config
    from asa.api.export import export_model
    from asa.io import load_volume

    results = root / "nnUNet_results"
    shutil.rmtree(results, ignore_errors=True)
    folder = export_model(checkpoint, results / "export", format="nnunet-results", dataset_id=DATASET_ID,
                          spacing=spacing, license="other")
    plans = json.loads((folder / "plans.json").read_text())
    placed = results / plans["dataset_name"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    placed.parent.mkdir(parents=True)
    folder.rename(placed)
    images = root / "test" / "images"
    asa_out, nnunet_out = root / "pred_asa", root / "pred_nnunet"
    for out in (asa_out, nnunet_out):
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    predict(compose_config("predict", [f"checkpoint={checkpoint}", f"input={images}", f"output={asa_out}",
                                       "device=cpu", "amp=off"]))
    asa_seconds = time.perf_counter() - started
    env = {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(root / "nnUNet_raw"),
           "nnUNet_preprocessed": str(root / "nnUNet_preprocessed")}
    command = [sys.executable, "-c", NNUNET_PREDICT, "-i", str(images), "-o", str(nnunet_out),
               "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "all", "--disable_tta", "-device", "cpu",
               "-npp", "1", "-nps", "1"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    nnunet_seconds = time.perf_counter() - started
    rows = []
    for image in sorted(images.glob("*_0000.nii.gz")):
        case = image.name.removesuffix("_0000.nii.gz")
        truth = load_volume(root / "test" / "labels" / f"{case}.nii.gz", label=True).array > 0
        ours = load_volume(asa_out / f"{case}.nii.gz", label=True).array > 0
        theirs = load_volume(nnunet_out / f"{case}.nii.gz", label=True).array > 0
        edge = float(np.linalg.norm(nib.load(str(image)).affine[:3, 0]))
        rows.append({"case": case, "spacing_mm": round(edge, 3), "agreement": lesion_dice(ours, theirs),
                     "asa_vs_truth": lesion_dice(ours, truth), "nnunet_vs_truth": lesion_dice(theirs, truth),
                     "voxels_differing": int((ours != theirs).sum()), "lesion_voxels": int(truth.sum())})
    agreement = [r["agreement"] for r in rows]
    return {"plans_spacing_mm": plans["configurations"]["3d_fullres"]["spacing"],
            "resampling": plans["configurations"]["3d_fullres"]["resampling_fn_data"],
            "cases": rows, "mean": float(np.mean(agreement)), "worst": float(np.min(agreement)),
            "asa_vs_truth_mean": float(np.mean([r["asa_vs_truth"] for r in rows])),
            "nnunet_vs_truth_mean": float(np.mean([r["nnunet_vs_truth"] for r in rows])),
            "seconds": {"asa_predict": round(asa_seconds, 1), "nnunet_predict": round(nnunet_seconds, 1)}}


def table(record: dict) -> str:
    """The per-case table (markdown) with the mean and the worst."""
    lines = ["| case | voxel (mm) | asa vs nnU-Net | asa vs truth | nnU-Net vs truth |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['spacing_mm']:.3f} | {r['agreement']:.3f} | {r['asa_vs_truth']:.3f} | "
              f"{r['nnunet_vs_truth']:.3f} |" for r in record["cases"]]
    lines.append(f"| mean | | **{record['mean']:.3f}** | {record['asa_vs_truth_mean']:.3f} | "
                 f"{record['nnunet_vs_truth_mean']:.3f} |")
    lines.append(f"| worst | | **{record['worst']:.3f}** | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the cases, the run and the predictions")
    p.add_argument("--train", type=int, default=12, help="training cases (default 12)")
    p.add_argument("--test", type=int, default=16, help="held-out cases predicted by both (default 16)")
    p.add_argument("--spacings", type=float, nargs=2, default=(2.6, 3.4), metavar=("LOW", "HIGH"),
                   help="voxel edges in mm, drawn per case (default 2.6 3.4)")
    p.add_argument("--steps", type=int, default=1500, help="fine-tuning steps (default 1500)")
    p.add_argument("--crop", type=int, default=32, help="the network's crop (default 32)")
    p.add_argument("--size", default="S", help="ResEnc size (default S)")
    p.add_argument("--device", default="cpu", help="fine-tuning device (default cpu; the predictions run on the CPU)")
    p.add_argument("--workers", type=int, default=0, help="fine-tuning data.num_workers (default 0)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first case (default 1000)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a fine-tuned last.pt of these cases: skip the data and training")
    p.add_argument("--spacing", type=float, nargs="+", default=None, help="asa-export --spacing (default: recorded)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="asa-finetune overrides of the trained network (e.g. data.percentiles=[0,100])")
    p.add_argument("--name", default="run", help="the run's folder under --out and the record's name (default run)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict = {"train": args.train, "test": args.test, "spacings": list(args.spacings)}
    checkpoint = args.checkpoint
    if checkpoint is None:
        started = time.perf_counter()
        record["edges"] = write_cases(args.out, train=args.train, test=args.test, spacings=tuple(args.spacings),
                                      seed=args.seed)
        checkpoint = finetune_run(args.out, steps=args.steps, crop=args.crop, size=args.size, seed=0,
                                  device=args.device, workers=args.workers, overrides=tuple(args.override),
                                  name=args.name)
        record["training_seconds"] = round(time.perf_counter() - started, 1)
    record["overrides"] = list(args.override)
    record.update(measure(args.out, checkpoint, spacing=args.spacing))
    (args.out / f"agreement-{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(table(record))
    return record


if __name__ == "__main__":
    main()
