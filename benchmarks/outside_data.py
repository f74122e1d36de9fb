"""Brain MRI subjects built without asa's demo generator, to prove asa's tools on data they did not write.

Every subject is the symmetric MNI152 2009 template that ships with nilearn (skull-stripped: zero outside its
brain mask; 1 mm, or nilearn's 2 mm copy) under a random affine (rotation up to 10 degrees about a random axis,
scale 0.9-1.1 per axis, shear up to 0.05, translation up to 5 mm) and a smooth random displacement (white
noise convolved with a Gaussian of 15-25 mm, 1.5-4 mm RMS), with a random grey/white contrast, a random
multiplicative bias field, Rician noise and a random intensity scale, sampled on an isotropic grid of a fixed
field of view (204 x 240 x 216 mm) whose voxel axes are permuted and flipped at random: a reader must use the
affine. With ``head`` the brain is given a head built from the distance to the brain mask (a dark band of CSF
and skull, an optional marrow line, a bright scalp; both thicknesses vary over the head and between subjects)
and a neck, so that a brain extraction has work to do. `lesion_case` adds 1-3 smooth blobs in white matter
(6-20 mm, hypo- or hyperintense) and their label map. Nothing here imports `asa.data.synthetic`.

Cost at 3 mm (68 x 80 x 72 voxels), one core, once the template is cached (about 2.5 s once per process):
0.06 s of CPU time per subject, 0.07 s with ``head``, 0.08-0.09 s per lesion case (medians of 20; wall time
0.13-0.24 s on a 2-core machine shared with other jobs).

The command line writes a BIDS cohort of healthy T1 subjects (``DIR/cohort``, read by
``asa.data.discover("bids", ...)``) and an nnU-Net v2 raw dataset of lesion cases (``DIR/labeled``, read by
``asa.data.discover("msd", ...)``: asa's ``msd`` data preset); healthy subject ``i`` has seed ``seed + i`` and
lesion case ``j`` has seed ``seed + healthy + j``, so no subject is in both:

    python -m benchmarks.outside_data --out /tmp/outside --healthy 30 --lesions 28 --spacing 3 --head --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

FOV = (204.0, 240.0, 216.0)  # mm, RAS; the whole head with some neck
CENTRE = np.array([0.0, -18.0, 6.0])  # mm, the field of view's centre in MNI space
BRAIN_CENTRE = np.array([0.0, -17.0, 5.0])  # mm, where the affine's rotation and scale are centred
PAD_MM = (32.0, 32.0, 48.0)  # zero margin round nilearn's grid, room for the head and neck (more below)
HEAD_MM = 22.0  # the head is built on voxels at most this far from the brain


@dataclass(frozen=True)
class Template:
    """The template's maps on a padded grid of ``res`` mm, and what every head is built from.

    Args:
        t1: [X, Y, Z] template intensities, white matter at 1.
        gm: [X, Y, Z] grey matter probability.
        wm: [X, Y, Z] white matter probability.
        brain: [X, Y, Z] brain mask as 0/1 floats.
        origin: [3] mm, the world position of voxel (0, 0, 0).
        res: voxel edge, mm.
        shell: [K] flat indices of the voxels outside the brain within `HEAD_MM` of it.
        distance: [K] mm from the brain of each shell voxel.
        direction: [3, K] unit vectors from the brain's centre to each shell voxel.
        neck: [M] flat indices of the candidate neck voxels (outside the brain, below the cerebellum).
        neck_xy: [2, M] mm, their position across the neck relative to the brainstem.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    origin: np.ndarray
    res: float
    shell: np.ndarray
    distance: np.ndarray
    direction: np.ndarray
    neck: np.ndarray
    neck_xy: np.ndarray


@lru_cache(maxsize=2)
def template(res: int) -> Template:
    """nilearn's MNI152 2009 template at ``res`` (1 or 2) mm, padded, with white matter scaled to 1."""
    if res not in (1, 2):
        raise ValueError(f"template resolution must be 1 or 2 mm, got {res!r}")
    from nilearn import datasets

    loaded = [np.asarray(f(resolution=res).get_fdata(), dtype=np.float32) for f in (
        datasets.load_mni152_template, datasets.load_mni152_gm_template, datasets.load_mni152_wm_template,
        datasets.load_mni152_brain_mask)]
    origin = datasets.load_mni152_template(resolution=res).affine[:3, 3].astype(float)
    t1, gm, wm, brain = loaded
    brain = (brain > 0.5).astype(np.float32)
    t1 = t1 * brain / float(np.median(t1[wm > 0.9]))
    pad = [(round(p / res), round(p / res)) for p in PAD_MM]
    pad[2] = (round(PAD_MM[2] / res), round(PAD_MM[0] / res))  # the neck needs room below, the vertex little
    t1, gm, wm, brain = (np.pad(a, pad) for a in (t1, gm, wm, brain))
    origin = origin - res * np.array([p[0] for p in pad])
    distance = ndimage.distance_transform_edt(brain == 0, sampling=res).astype(np.float32)
    axes = [origin[a] + res * np.arange(t1.shape[a]) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # [3, X, Y, Z] mm
    shell = np.flatnonzero((distance > 0) & (distance <= HEAD_MM))
    offset = grid.reshape(3, -1)[:, shell] - BRAIN_CENTRE[:, None]
    inside = np.argwhere(brain > 0)
    low = inside[:, 2].min()
    stem = origin + res * inside[inside[:, 2] <= low + 2].mean(axis=0)  # the brainstem where nilearn's grid ends
    neck_zone = (grid[2] < stem[2] + 40.0) & (brain == 0) \
        & (np.hypot(grid[0] - stem[0], grid[1] - stem[1]) < 70.0)
    neck = np.flatnonzero(neck_zone)
    neck_xy = grid.reshape(3, -1)[:2, neck] - stem[:2, None]
    return Template(t1, gm, wm, brain, origin, float(res), shell, distance.reshape(-1)[shell],
                    (offset / np.linalg.norm(offset, axis=0)).astype(np.float32), neck, neck_xy.astype(np.float32))


def smooth_field(rng: np.random.Generator, axes: list[np.ndarray], sigma: float) -> np.ndarray:
    """White noise convolved with a Gaussian of ``sigma`` mm, sampled on the grid of ``axes`` (mm per axis);
    unit standard deviation. Control points every sigma/2 mm, so the sum is separable and costs little."""
    step = sigma / 2
    kernels = []
    for x in axes:
        g = np.arange(x[0] - 2 * sigma, x[-1] + 2 * sigma + step, step)
        kernels.append(np.exp(-((x[:, None] - g[None]) ** 2) / (2 * sigma**2)).astype(np.float32))
    w = rng.standard_normal(tuple(k.shape[1] for k in kernels), dtype=np.float32)
    f = np.einsum("ia,jb,kc,abc->ijk", *kernels, w, optimize=True)
    return f / f.std()


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation about a random axis by up to ``max_degrees`` (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _with_head(tpl: Template, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``source`` (a brain, white matter near 1) with a head round it: from the brain outwards a dark band
    (CSF and skull, 3-10 mm), sometimes a grey marrow line inside it, then a bright scalp (3-10 mm) fading at its
    edge; both thicknesses vary smoothly over the head; below the cerebellum a neck of muscle in a fat rim."""
    d = tpl.direction

    def thickness(low: float, high: float) -> np.ndarray:
        base = rng.uniform(low + 1.5, high - 1.5)
        tilt = rng.uniform(-1.5, 1.5, size=3) @ d + rng.uniform(-1.5, 1.5) * (d[2] ** 2 - 1 / 3)
        return np.clip(base + tilt, low, high)

    dark_mm, scalp_mm = thickness(3.0, 10.0), thickness(3.0, 10.0)
    dist = tpl.distance
    dark_level, scalp_level = rng.uniform(0.02, 0.15), rng.uniform(0.6, 1.2)
    values = np.zeros_like(dist)
    values[dist <= dark_mm] = dark_level
    if rng.random() < 0.5:  # diploic marrow: a grey line in the middle of the skull
        middle = np.abs(dist - 0.65 * dark_mm) < tpl.res * 0.6
        values[middle] = rng.uniform(0.3, 0.5)
    depth = (dist - dark_mm) / scalp_mm  # 0 at the skull, 1 at the skin
    scalp = (depth > 0) & (depth <= 1.0)
    values[scalp] = scalp_level * np.clip(1.6 * (1 - depth[scalp]) + 0.3, 0.0, 1.0)
    flat = source.reshape(-1).copy()
    flat[tpl.shell] = values
    radii = rng.uniform(40.0, 55.0), rng.uniform(35.0, 50.0)
    r = np.hypot(tpl.neck_xy[0] / radii[0], tpl.neck_xy[1] / radii[1])
    rim = rng.uniform(3.0, 8.0) / min(radii)
    neck = np.where(r < 1 - rim, rng.uniform(0.3, 0.5), np.where(r < 1, scalp_level, 0.0))
    flat[tpl.neck] = np.where(flat[tpl.neck] > 0, flat[tpl.neck], neck)  # the head's layers stay where they are
    return flat.reshape(source.shape)


def _grid_axes(spacing: float) -> list[np.ndarray]:
    """The world coordinates (mm, RAS) of the fixed field of view's voxel centres, per axis."""
    shape = [int(round(f / spacing)) for f in FOV]
    return [CENTRE[a] + spacing * (np.arange(shape[a]) - (shape[a] - 1) / 2) for a in range(3)]


def _anatomy(seed: int, spacing: float, head: bool, wm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The warped subject before acquisition on the canonical (RAS) grid: intensities, brain mask and, when
    ``wm``, white matter probability."""
    if spacing <= 0:
        raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}")
    tpl = template(1 if spacing < 2 else 2)
    rng = np.random.default_rng([seed, 0])
    a_gm, a_wm = rng.uniform(-0.15, 0.15, size=2)
    source = tpl.t1 * (1 + a_gm * tpl.gm + a_wm * tpl.wm)
    shear = np.eye(3) + np.triu(rng.uniform(-0.05, 0.05, size=(3, 3)), k=1)
    matrix = _rotation(rng, 10.0) @ np.diag(rng.uniform(0.9, 1.1, size=3)) @ shear
    shift = rng.uniform(-5.0, 5.0, size=3)
    axes = _grid_axes(spacing)
    sigma, amplitude = rng.uniform(15.0, 25.0), rng.uniform(1.5, 4.0)
    coords = []
    for i in range(3):  # template position = centre + matrix (x - centre - shift) + displacement, in voxels
        c = sum(np.reshape(matrix[i, a] * (axes[a] - BRAIN_CENTRE[a] - shift[a]),
                           [-1 if b == a else 1 for b in range(3)]) for a in range(3))
        c = c + amplitude * smooth_field(rng, axes, sigma) + BRAIN_CENTRE[i] - tpl.origin[i]
        coords.append(c / tpl.res)
    coords = np.stack(coords)  # [3, X, Y, Z]
    if head:
        source = _with_head(tpl, source, np.random.default_rng([seed, 1]))
    image = ndimage.map_coordinates(source, coords, order=1, cval=0.0, prefilter=False)
    brain = ndimage.map_coordinates(tpl.brain, coords, order=1, cval=0.0, prefilter=False) > 0.5
    white = ndimage.map_coordinates(tpl.wm, coords, order=1, cval=0.0, prefilter=False) if wm else None
    return image.astype(np.float32), brain, white


def _acquire(image: np.ndarray, brain: np.ndarray, spacing: float, head: bool, seed: int) -> np.ndarray:
    """``image`` as a scanner gives it: a smooth multiplicative bias, a random scale, Rician noise; outside the
    brain zero when the subject is skull-stripped (not ``head``)."""
    rng = np.random.default_rng([seed, 2])
    bias = np.exp(rng.uniform(0.05, 0.25) * smooth_field(rng, _grid_axes(spacing), rng.uniform(40.0, 70.0)))
    scale = float(np.exp(rng.uniform(np.log(50.0), np.log(3000.0))))
    noise = rng.uniform(0.01, 0.04)
    signal = image * bias
    real = signal + noise * rng.standard_normal(image.shape, dtype=np.float32)
    imag = noise * rng.standard_normal(image.shape, dtype=np.float32)
    out = np.sqrt(real * real + imag * imag) * scale
    if not head:
        out[~brain] = 0.0
    return out.astype(np.float32)


def _orient(arrays: list[np.ndarray], spacing: float, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``arrays`` (canonical RAS, all one grid) with their voxel axes permuted and flipped at random, and the
    affine of the result (world = affine @ [i, j, k, 1])."""
    rng = np.random.default_rng([seed, 3])
    perm = rng.permutation(3)
    flips = rng.random(3) < 0.5
    axes = _grid_axes(spacing)
    canonical = np.eye(4)
    canonical[:3, :3] *= spacing
    canonical[:3, 3] = [a[0] for a in axes]
    shape = arrays[0].shape
    flip = np.eye(4)  # canonical index from flipped index
    for a in range(3):
        if flips[a]:
            flip[a, a], flip[a, 3] = -1.0, shape[a] - 1
    permute = np.zeros((4, 4))  # flipped index from the new (transposed) index: old axis perm[k] is new axis k
    permute[perm, np.arange(3)] = 1.0
    permute[3, 3] = 1.0
    out = [np.ascontiguousarray(np.flip(x, axis=tuple(np.flatnonzero(flips))).transpose(perm)) for x in arrays]
    return out, canonical @ flip @ permute


def warp_subject(seed: int, *, spacing: float = 3.0, head: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject ``seed``: the template warped, acquired and oriented at random (see the module's docstring).

    Returns (volume [X, Y, Z] float32, affine [4, 4], brain mask [X, Y, Z] bool); the same seed gives the same
    subject, its voxel axes in one of the 48 orientations."""
    image, brain, _ = _anatomy(seed, spacing, head, wm=False)
    volume = _acquire(image, brain, spacing, head, seed)
    (volume, brain), affine = _orient([volume, brain], spacing, seed)
    return volume, affine, brain


def _lesions(image: np.ndarray, brain: np.ndarray, white: np.ndarray, spacing: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with 1-3 lesions centred in white matter, and their label (uint8: 1 lesion). A lesion is a
    union of 2-4 Gaussian bumps round its centre (6-20 mm across), thresholded; its intensity changes by 30-60 %
    (darker or brighter) inside the label, fading to none about a radius beyond it; only the brain changes."""
    label = np.zeros(image.shape, dtype=bool)
    change = np.zeros(image.shape, dtype=np.float32)
    core = ndimage.binary_erosion(brain, iterations=2) & (white > 0.6)
    candidates = np.argwhere(core)
    if len(candidates) == 0:
        raise ValueError("no white matter to place a lesion in: the subject's grid is too coarse")
    for _ in range(rng.integers(1, 4)):
        centre = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(3.0, 10.0)  # mm, half the 6-20 mm diameter
        reach = int(np.ceil(3.5 * radius / spacing)) + 1  # the lobes and the fading edge lie inside
        box = tuple(slice(max(0, c - reach), min(n, c + reach + 1)) for c, n in zip(centre, image.shape))
        grid = np.stack(np.meshgrid(*[spacing * (np.arange(s.start, s.stop) - c) for s, c in zip(box, centre)],
                                    indexing="ij"))
        field = np.exp(-np.sum(grid**2, axis=0) / (2 * (radius / 1.18) ** 2))  # 0.5 at ``radius``
        for _ in range(rng.integers(1, 4)):  # lobes off the centre make the blob irregular
            at = rng.normal(0.0, radius / 2, size=3)
            width = radius * rng.uniform(0.4, 0.7) / 1.18
            field = np.maximum(field, np.exp(-np.sum((grid - at[:, None, None, None]) ** 2, axis=0) / (2 * width**2)))
        label[box] |= field >= 0.5
        fade = np.clip((field - 0.05) / 0.45, 0.0, 1.0)  # full inside the label, zero before the box's edge
        new = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6) * fade
        change[box] = np.where(np.abs(new) > np.abs(change[box]), new, change[box])  # where lesions meet, the stronger
    label &= brain
    return (image * (1 + change * brain)).astype(np.float32), label.astype(np.uint8)


def lesion_case(seed: int, *, spacing: float = 3.0, head: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Subject ``seed`` (as `warp_subject` gives it, same grid and noise) with 1-3 white-matter lesions.

    Returns (volume [X, Y, Z] float32, label [X, Y, Z] uint8 with 0 background and 1 lesion, affine [4, 4],
    brain mask [X, Y, Z] bool)."""
    image, brain, white = _anatomy(seed, spacing, head, wm=True)
    image, label = _lesions(image, brain, white, spacing, np.random.default_rng([seed, 4]))
    volume = _acquire(image, brain, spacing, head, seed)
    (volume, label, brain), affine = _orient([volume, label, brain], spacing, seed)
    return volume, label, affine, brain


def write_cohort(root: Path, seeds: list[int], *, spacing: float, head: bool) -> list[str]:
    """A BIDS raw folder of healthy T1 subjects ``sub-XXX/anat/sub-XXX_T1w.nii.gz``; their ids."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "MNI152 2009 template, warped subjects", "BIDSVersion": "1.8.0", "DatasetType": "raw"}, indent=1))
    ids, rows = [], ["participant_id\tseed"]
    for i, seed in enumerate(seeds):
        sub = f"sub-{i + 1:03d}"
        volume, affine, _ = warp_subject(seed, spacing=spacing, head=head)
        folder = root / sub / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, affine), str(folder / f"{sub}_T1w.nii.gz"))
        ids.append(sub)
        rows.append(f"{sub}\t{seed}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return ids


def write_labeled(root: Path, seeds: list[int], *, spacing: float, head: bool) -> list[str]:
    """An nnU-Net v2 raw dataset of lesion cases (``imagesTr/<id>_0000.nii.gz``, ``labelsTr/<id>.nii.gz``,
    ``dataset.json``); their ids."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    ids = []
    for i, seed in enumerate(seeds):
        case = f"lesion_{i + 1:03d}"
        volume, label, affine, _ = lesion_case(seed, spacing=spacing, head=head)
        nib.save(nib.Nifti1Image(volume, affine), str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"{case}.nii.gz"))
        ids.append(case)
    meta = {"name": "MNI152 2009 template, warped subjects with white-matter lesions",
            "channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1},
            "numTraining": len(ids), "file_ending": ".nii.gz", "seeds": dict(zip(ids, seeds))}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return ids


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write cohort/ and labeled/ in")
    p.add_argument("--healthy", type=int, default=30, help="healthy subjects of the BIDS cohort (default 30)")
    p.add_argument("--lesions", type=int, default=28, help="lesion cases of the nnU-Net set (default 28)")
    p.add_argument("--spacing", type=float, default=3.0, help="voxel edge in mm (default 3)")
    p.add_argument("--head", action="store_true", help="whole heads (skull, scalp, neck), not skull-stripped")
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject (default 0)")
    args = p.parse_args(argv)
    for name in ("healthy", "lesions"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name} must be 0 or more, got {getattr(args, name)}")
    if args.spacing <= 0:
        raise SystemExit(f"--spacing must be a positive number of mm, got {args.spacing}")
    start = time.perf_counter()
    healthy = list(range(args.seed, args.seed + args.healthy))
    lesions = list(range(args.seed + args.healthy, args.seed + args.healthy + args.lesions))
    result = {"spacing": args.spacing, "head": args.head}
    if healthy:
        result["cohort"] = {"root": str(args.out / "cohort"), "layout": "bids",
                            "subjects": len(write_cohort(args.out / "cohort", healthy, spacing=args.spacing,
                                                         head=args.head))}
    if lesions:
        result["labeled"] = {"root": str(args.out / "labeled"), "layout": "msd",
                             "cases": len(write_labeled(args.out / "labeled", lesions, spacing=args.spacing,
                                                        head=args.head))}
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
