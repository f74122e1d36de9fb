"""`asa-prepare` on known truth: whole heads of ``asa-demo-data --anatomy --skull`` under known random
poses, prepared, and measured against the generator's own truth.

Each head (`asa.data.synthetic.anatomy.make_anatomy_subject(..., skull=True)`) is resampled under a pose
(rotation up to ``rotate`` degrees about each axis, translation up to ``shift`` mm, scaling up to
``scale`` per axis), multiplied by a smooth bias field and given Rician noise, onto a grid of one of
`GRIDS`: ``iso`` (the head's voxel edge, RAS axes), ``aniso`` (three times thicker slices along z, each the
mean of three thin ones: a 1 x 1 x 3 mm acquisition at 1 mm) and ``oblique`` (the grid's axes turned 20
degrees about left-right). The generator's truth travels along with the head: its brain mask and the
hemisphere each brain voxel came from (`AnatomySubject.hemisphere`).

After `asa.data.prepare.prepare`, the truth is carried through each case's saved transform onto the
prepared grid: the mid-sagittal plane (the least-squares plane through the border between the
hemispheres) should be the template's plane x = 0. Measured per case: its angle (degrees) and its offset
(mm, along x at the brain's centre) from x = 0, before (in the scanner's grid) and after; the Dice of the
prepared brain mask with the generator's brain; the seconds of each stage. The generator's own elastic
warp (about 3 mm RMS, independent in the two hemispheres) bends the border, so a perfect affine leaves a
small angle.

    python -m benchmarks.prepare --size 80 --poses 4 --tools deepbet robex --out /tmp/prepare_bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from asa.data.prepare import PrepareSettings, prepare, prepared_grid
from asa.data.prepare.case import case_files
from asa.data.prepare.stages import resample
from asa.data.layouts import discover
from asa.data.synthetic.anatomy import make_anatomy_subject

__all__ = ["GRIDS", "Pose", "PosedHead", "draw_pose", "posed_head", "midplane", "plane_error", "dice", "run",
           "main"]

GRIDS = ("iso", "aniso", "oblique")
_OBLIQUE_DEG = 20.0


@dataclass(frozen=True)
class Pose:
    """A head's pose in the scanner: rotations (degrees, about x, y, z), translation (mm), scale per axis."""

    rotate: tuple[float, float, float]
    shift: tuple[float, float, float]
    scale: tuple[float, float, float]

    def matrix(self, centre: np.ndarray) -> np.ndarray:
        """4 x 4 world -> world: the head turned and scaled about ``centre`` (mm), then shifted."""
        linear = Rotation.from_euler("xyz", self.rotate, degrees=True).as_matrix() @ np.diag(self.scale)
        out = np.eye(4)
        out[:3, :3] = linear
        out[:3, 3] = centre - linear @ centre + np.asarray(self.shift)
        return out


def draw_pose(rng: np.random.Generator, *, rotate: float = 15.0, shift: float = 20.0, scale: float = 0.10) -> Pose:
    """A pose drawn uniformly within the bounds (degrees, mm, relative scale)."""
    return Pose(tuple(rng.uniform(-rotate, rotate, 3).round(2)), tuple(rng.uniform(-shift, shift, 3).round(2)),
                tuple((1.0 + rng.uniform(-scale, scale, 3)).round(4)))


@dataclass
class PosedHead:
    """A posed head on its scanner grid: the T1 [X, Y, Z], the truth (brain bool, hemisphere -1/0/+1) on the
    same grid, the grid's affine and the pose."""

    t1: np.ndarray
    brain: np.ndarray
    hemisphere: np.ndarray
    affine: np.ndarray
    pose: Pose


def _bias(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic over the grid, within about ±strength."""
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    terms = [*axes, *(a * b for i, a in enumerate(axes) for b in axes[i:])]
    field = sum(c * t for c, t in zip(rng.normal(0, 1, len(terms)), terms))
    field = field / max(float(np.abs(field).max()), 1e-6) * strength
    return np.exp(field).astype(np.float32)


def posed_head(size: int, *, seed: int, index: int, grid: str, rng: np.random.Generator, noise: float = 0.02,
               skull: bool = True, **bounds: float) -> PosedHead:
    """Head ``index`` of ``seed`` at ``size`` (the generator's grid edge), under a pose drawn from ``rng``
    (``bounds``: `draw_pose`'s), on a scanner grid of kind ``grid`` (`GRIDS`). Without ``skull`` the
    skull-stripped brain, its noise inside the brain only (zero outside, as a stripped scan)."""
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: expected one of {GRIDS}")
    subject = make_anatomy_subject(size, seed=seed, index=index, skull=skull)
    source = subject.affine
    voxel = float(source[0, 0])
    centre = source[:3, :3] @ ((np.asarray(subject.brain_mask.shape) - 1) / 2) + source[:3, 3]
    pose = draw_pose(rng, **bounds)
    move = pose.matrix(centre)
    axes = np.eye(3) if grid != "oblique" else Rotation.from_euler("x", _OBLIQUE_DEG, degrees=True).as_matrix()
    corners = np.array(np.meshgrid(*([0, n - 1] for n in subject.brain_mask.shape), indexing="ij")).reshape(3, -1)
    world = move[:3, :3] @ (source[:3, :3] @ corners + source[:3, 3:]) + move[:3, 3:]
    local = axes.T @ world  # the posed head's corners in the grid's axes
    lo, hi = local.min(1), local.max(1)
    thick = 3 if grid == "aniso" else 1
    shape = np.ceil((hi - lo) / voxel).astype(int) + 1
    shape[2] = int(np.ceil(shape[2] / thick)) * thick
    fine = np.eye(4)
    fine[:3, :3] = axes * voxel
    fine[:3, 3] = axes @ lo
    # scanner voxel -> source voxel: source^-1 . move^-1 . fine
    to_source = np.linalg.inv(source) @ np.linalg.inv(move) @ fine
    coords = to_source[:3, :3] @ np.indices(tuple(shape), dtype=np.float64).reshape(3, -1) + to_source[:3, 3:]
    sample = lambda data, order: ndimage.map_coordinates(data, coords, order=order, mode="constant").reshape(shape)
    t1 = sample(subject.images["t1"], 1).astype(np.float32)
    brain = sample(subject.brain_mask.astype(np.float32), 1)
    hemisphere = sample(subject.hemisphere.astype(np.float32), 0)
    affine = fine.copy()
    if thick > 1:  # thick slices: each the mean of three thin ones, the truth at their middle
        t1 = t1.reshape(shape[0], shape[1], -1, thick).mean(-1)
        brain = brain.reshape(shape[0], shape[1], -1, thick).mean(-1)
        hemisphere = hemisphere[:, :, 1::thick]
        affine[:3, 2] *= thick
        affine[:3, 3] += fine[:3, 2] * (thick - 1) / 2
    t1 = t1 * _bias(t1.shape, rng)
    noisy = np.hypot(t1 + rng.normal(0, noise, t1.shape), rng.normal(0, noise, t1.shape)).astype(np.float32)
    t1 = noisy if skull else np.where(t1 > 0, noisy, 0.0).astype(np.float32)
    return PosedHead(t1=t1, brain=brain >= 0.5, hemisphere=np.rint(hemisphere).astype(np.int8), affine=affine,
                     pose=pose)


def midplane(hemisphere: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit normal, a point) in mm of the least-squares plane through the border between the
    hemispheres (voxels of -1 touching +1, and the reverse) of a hemisphere map on the grid ``affine``."""
    left, right = hemisphere < 0, hemisphere > 0
    border = (left & ndimage.binary_dilation(right)) | (right & ndimage.binary_dilation(left))
    points = affine[:3, :3] @ np.argwhere(border).T.astype(np.float64) + affine[:3, 3:]
    if points.shape[1] < 10:
        raise ValueError("fewer than 10 border voxels between the hemispheres: no plane to fit")
    centre = points.mean(1)
    normal = np.linalg.svd(points - centre[:, None], full_matrices=False)[0][:, -1]
    return normal * np.sign(normal[0] or 1.0), centre


def plane_error(hemisphere: np.ndarray, brain: np.ndarray, affine: np.ndarray,
                axis: np.ndarray | None = None) -> tuple[float, float]:
    """(angle in degrees, offset in mm) of the hemispheres' plane from the plane x = 0 of the grid's world
    (``axis``: the reference normal, default x): the angle between the normals, the offset the plane's
    distance from 0 along x at the brain's centre."""
    normal, point = midplane(hemisphere, affine)
    axis = np.array([1.0, 0.0, 0.0]) if axis is None else axis / np.linalg.norm(axis)
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(normal @ axis))))))
    centre = affine[:3, :3] @ np.argwhere(brain).mean(0) + affine[:3, 3]
    x = point[0] - (normal[1] * (centre[1] - point[1]) + normal[2] * (centre[2] - point[2])) / normal[0]
    return angle, float(abs(x))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def write_heads(out: Path, *, size: int, poses: int, seed: int, grids: Sequence[str], skull: bool = True
                ) -> list[dict]:
    """Posed heads as a raw BIDS folder ``out/raw`` (one subject per head) with their truth in ``out/truth``;
    returns one row per head (its id, grid, pose and the plane's angle and offset in the scanner's grid)."""
    rng = np.random.default_rng([seed, 7])
    rows = []
    kinds = ["iso"] * poses + [g for g in grids if g != "iso"]
    for k, grid in enumerate(kinds):
        head = posed_head(size, seed=seed, index=k, grid=grid, rng=rng, skull=skull)
        sub = f"sub-POSE{k:02d}"
        anat = out / "raw" / sub / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(head.t1, head.affine), str(anat / f"{sub}_T1w.nii.gz"))
        truth = out / "truth"
        truth.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(head.brain.astype(np.uint8), head.affine), str(truth / f"{sub}_brain.nii.gz"))
        nib.save(nib.Nifti1Image(head.hemisphere, head.affine), str(truth / f"{sub}_hemisphere.nii.gz"))
        angle, offset = plane_error(head.hemisphere, head.brain, head.affine)
        rows.append({"id": sub, "grid": grid, "pose": asdict(head.pose), "angle_before": angle,
                     "offset_before": offset, "voxel_mm": [round(float(v), 3) for v in
                                                           np.linalg.norm(head.affine[:3, :3], axis=0)]})
    return rows


def measure(out: Path, prepared: Path, heads: list[dict], settings: PrepareSettings) -> list[dict]:
    """Per head: the plane's angle and offset on the prepared grid, the brain mask's Dice, the stage times."""
    shape, grid = prepared_grid(box=settings.box, crop=settings.crop, spacing=settings.spacing)
    cases = {c.id: c for c in discover("bids", out / "raw", validate="none")}
    rows = []
    for head in heads:
        files = case_files(cases[head["id"]])
        record_path = prepared / files.record
        if not record_path.is_file():
            rows.append({**head, "tool": settings.brain, "failed": True})
            continue
        record = json.loads(record_path.read_text())
        transform = [str(prepared / record["transforms"]["t1"])]
        truth = out / "truth"
        brain_raw = nib.load(str(truth / f"{head['id']}_brain.nii.gz"))
        hemi_raw = nib.load(str(truth / f"{head['id']}_hemisphere.nii.gz"))
        brain = resample(np.asarray(brain_raw.dataobj, dtype=np.float32), brain_raw.affine, transform, shape=shape,
                         target=grid) >= 0.5
        hemi = resample(np.asarray(hemi_raw.dataobj, dtype=np.float32), hemi_raw.affine, transform, shape=shape,
                        target=grid, label=True)
        angle, offset = plane_error(np.rint(hemi).astype(np.int8), brain, grid)
        mask = np.asarray(nib.load(str(prepared / record["mask"])).dataobj) > 0
        rows.append({**head, "tool": settings.brain, "angle": angle, "offset": offset,
                     "dice": dice(mask, brain) if settings.brain != "none" else None,
                     "seconds": record["seconds"], "cpu_seconds": record["cpu_seconds"], "qc": record["qc"]})
    return rows


def run(out: str | Path, *, size: int = 80, poses: int = 4, seed: int = 0, tools: Sequence[str] = ("deepbet",),
        grids: Sequence[str] = GRIDS, spacing: float = 2.0, box: str = "template", crop: int = 64,
        transform: str = "affine", workers: int = 1) -> list[dict]:
    """Write the posed heads, prepare them with each brain tool of ``tools`` and measure; one row per head
    and tool. ``tools`` ``("none",)`` alone: skull-stripped brains (what ``--brain none`` takes)."""
    out = Path(out)
    heads = write_heads(out, size=size, poses=poses, seed=seed, grids=grids, skull=list(tools) != ["none"])
    rows = []
    for tool in tools:
        settings = PrepareSettings(transform=transform, brain=tool, spacing=spacing, box=box, crop=crop)
        prepared = out / f"prepared_{tool}"
        start = time.perf_counter()
        report = prepare(out / "raw", prepared, settings=settings, workers=workers, progress=False)
        for case_id, reason in report.failed.items():
            print(f"{tool}: {case_id} failed: {reason}", file=sys.stderr)
        measured = measure(out, prepared, heads, settings)
        for row in measured:
            row["wall_s"] = round(time.perf_counter() - start, 1)
        rows += measured
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per tool and grid, the angle and offset after (mean, max), before (mean), Dice (mean, min)."""
    lines = ["| brain | grid | heads | angle after (°) mean / max | offset after (mm) mean / max | angle before (°) "
             "mean | Dice mean / min |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["tool"], r["grid"]) for r in rows}, key=lambda k: (k[0], GRIDS.index(k[1])))
    for tool, grid in keys:
        sel = [r for r in rows if (r["tool"], r["grid"]) == (tool, grid) and not r.get("failed")]
        if not sel:
            continue
        a, o, b = ([r[k] for r in sel] for k in ("angle", "offset", "angle_before"))
        dices = [r["dice"] for r in sel if r["dice"] is not None]
        d = f"{np.mean(dices):.3f} / {np.min(dices):.3f}" if dices else "-"
        lines.append(f"| {tool} | {grid} | {len(sel)} | {np.mean(a):.2f} / {np.max(a):.2f} | {np.mean(o):.2f} / "
                     f"{np.max(o):.2f} | {np.mean(b):.1f} | {d} |")
    stages = ["read", "n4", "brain", "register", "resample", "qc", "write"]
    lines += ["", "| brain | " + " | ".join(stages) + " | total (CPU s per volume, one core) |",
              "|---|" + "---|" * (len(stages) + 1)]
    for tool in sorted({r["tool"] for r in rows}):
        sel = [r["cpu_seconds"] for r in rows if r["tool"] == tool and not r.get("failed")]
        means = [float(np.mean([s.get(k, 0.0) for s in sel])) for k in stages]
        lines.append(f"| {tool} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {sum(means):.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="work folder (raw heads, truth, prepared folders)")
    parser.add_argument("--size", type=int, default=80, help="the generator's grid edge (80: about 2.9 mm voxels)")
    parser.add_argument("--poses", type=int, default=4, help="heads on the iso grid (one more per other grid)")
    parser.add_argument("--grids", nargs="+", choices=GRIDS, default=list(GRIDS))
    parser.add_argument("--tools", nargs="+", choices=("deepbet", "robex", "none"), default=["deepbet"])
    parser.add_argument("--spacing", type=float, default=2.0, help="prepared voxel edge (mm)")
    parser.add_argument("--box", choices=("centre", "template"), default="template")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--transform", choices=("affine", "rigid"), default="affine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.out, size=args.size, poses=args.poses, seed=args.seed, tools=args.tools, grids=args.grids,
               spacing=args.spacing, box=args.box, crop=args.crop, transform=args.transform, workers=args.workers)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
