"""Demo subjects from the MNI152 template (asa.data.synthetic.anatomy): deterministic, written in the layouts the
package reads, with tissue labels and lesions that intensity alone cannot find."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

from asa.data import (ANATOMY_LAYOUTS, LESION_NAMES, discover, get_task, load_volume,  # noqa: E402
                      make_anatomy_subject, write_anatomy_dataset, write_demo_dataset)


def _decoded(root: Path) -> dict[str, bytes]:
    """File -> contents (gzip decoded, so gzip's time stamp does not count)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(p.relative_to(root))] = gzip.decompress(data) if p.suffix == ".gz" else data
    return out


@pytest.fixture(scope="module")
def msd48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_anatomy_dataset("msd", tmp_path_factory.mktemp("anat") / "msd", cases=3, size=48, seed=1,
                                 lesions=True)


def _case_arrays(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, C, X, Y, Z] and labels [N, X, Y, Z] of an MSD folder, read by the package's own readers."""
    cases = discover("msd", root)
    channels = get_task("msd", root).channels
    images = np.stack([np.stack([load_volume(c.images[ch]).array.reshape(load_volume(c.label).array.shape[-3:])
                                 for ch in channels]) for c in cases])
    labels = np.stack([load_volume(c.label, label=True).array.reshape(images.shape[-3:]) for c in cases])
    return images, labels


@pytest.mark.slow
def test_same_seed_same_files_other_index_other_subject(tmp_path):
    a = write_anatomy_dataset("msd", tmp_path / "a", cases=2, size=32, seed=5, lesions=True)
    b = write_demo_dataset("msd", tmp_path / "b", cases=2, size=32, seed=5, anatomy=True, lesions=True)
    files = _decoded(a)
    assert files == _decoded(b) and len(files) == 2 * 5 + 1  # 4 channels + label per case, dataset.json
    first, second = (load_volume(a / "imagesTr" / f"MNI_DEMO_00{i}_0001.nii.gz").array for i in (1, 2))
    brain = (first > 0) | (second > 0)
    assert np.mean(first[brain] != second[brain]) > 0.9  # another warp, bias and noise
    other_seed = make_anatomy_subject(32, seed=6, index=0)
    assert not np.array_equal(other_seed.images["t1"], make_anatomy_subject(32, seed=5, index=0).images["t1"])


@pytest.mark.slow
def test_lesions_change_nothing_but_the_lesions():
    healthy, lesioned = (make_anatomy_subject(32, seed=1, index=3, lesions=flag) for flag in (False, True))
    assert set(np.unique(healthy.labels)) == {0, 1, 2, 3}
    assert np.array_equal(healthy.brain_mask, lesioned.brain_mask)
    near = ndimage.binary_dilation(lesioned.labels >= 4, iterations=2)  # partial volume around the lesions
    assert np.sum(healthy.tissue[~near] != lesioned.tissue[~near]) <= 0.001 * healthy.brain_mask.sum()
    for name in healthy.images:  # same warp, bias, gamma and noise away from the lesions
        same = healthy.images[name][~near & healthy.brain_mask] == lesioned.images[name][~near & healthy.brain_mask]
        assert same.mean() > 0.97, (name, same.mean())


@pytest.mark.parametrize("layout", ANATOMY_LAYOUTS)
def test_every_layout_is_read_by_its_adapter(tmp_path, layout):
    root = write_anatomy_dataset(layout, tmp_path / layout, cases=3, size=32, seed=0)
    cases = discover(layout, root)  # full validation: shapes, affines, label values, contrast
    assert len(cases) == 3
    volume = load_volume(next(iter(cases[0].images.values())))
    assert volume.array.shape[-3:] == (32, 32, 32)
    assert np.allclose(np.abs(np.diag(volume.affine)[:3]), np.abs(np.diag(volume.affine)[0]))  # isotropic, RAS
    assert 4.5 < abs(volume.affine[0, 0]) < 7.0  # 32 voxels hold the ~180 mm brain
    if layout in ("ibsr", "msd"):
        for case in cases:
            values = set(np.unique(load_volume(case.label, label=True).array).tolist())
            assert values == {0, 1, 2, 3}


@pytest.mark.slow
def test_msd_labels_cover_tissue_and_lesion_classes(msd48):
    task = get_task("msd", msd48)
    assert task.class_values == (0, 1, 2, 3, 4, 5)
    assert task.output_names == ("CSF", "GM", "WM", "heterotopia", "deep_grey_enlargement")
    assert task.channels == ("FLAIR", "T1w", "T1gd", "T2w")
    _, labels = _case_arrays(msd48)
    for label in labels:
        counts = np.bincount(label.ravel(), minlength=6)
        assert (counts[1:] > 0).all(), counts
        assert counts[4] >= 8 and counts[5] >= 30, counts  # lesions of a few voxels at 4 mm


@pytest.mark.slow
def test_lesions_are_of_their_kinds():
    """Heterotopia: GM intensities, inside WM, away from CSF. Deep-grey enlargement: normal tissue
    intensities, on the side drawn."""
    for index in range(3):
        subject = make_anatomy_subject(48, seed=2, index=index, lesions=True)
        labels, t1 = subject.labels, subject.images["t1"]
        gm, wm = np.median(t1[labels == 2]), np.median(t1[labels == 3])
        x = np.stack([subject.images[m] for m in ("t1", "t1ce", "t2", "flair")], -1)[labels > 0].astype(np.float64)
        y = labels[labels > 0]
        tissue_only = _gaussian_loglik(x, y, (1, 2, 3)).argmax(1) + 1
        for value in LESION_NAMES:
            lesion = y == value
            assert lesion.any()
            # to a classifier of the tissues' 4 intensities, heterotopia is grey matter; the grown nuclei are
            # normal tissue, a GM / WM mix like the template's deep nuclei themselves
            assert np.mean(tissue_only[lesion] == 2) > (0.75 if value == 4 else 0.3), (value, tissue_only[lesion])
            assert np.mean(tissue_only[lesion] >= 2) > 0.95
        shell = ndimage.binary_dilation(labels == 4, iterations=1) & ~(labels == 4)
        assert np.mean(labels[shell] == 3) > 0.75  # surrounded by white matter
        assert not (shell & (labels <= 1)).any()  # nowhere near CSF or the outside
        grown = np.argwhere(labels == 5)
        x_mm = (subject.affine @ np.c_[grown, np.ones(len(grown))].T)[0]
        side = subject.lesions["deep_grey_enlargement"]
        assert np.mean(np.sign(x_mm) == (1 if side == "right" else -1)) > 0.9  # RAS: +x right
        assert gm < wm  # T1: the lesions are darker than the white matter they replace


def _gaussian_loglik(x: np.ndarray, y: np.ndarray, classes) -> np.ndarray:
    """Per-voxel Gaussian classifier of intensities x [V, C] fitted on the truth y [V]: log p(x, k) [V, K]
    (full covariance per class, class frequencies as priors)."""
    out = []
    for k in classes:
        xk = x[y == k]
        cov = np.cov(xk.T) + 1e-6 * np.eye(x.shape[1])
        d = x - xk.mean(0)
        out.append(-0.5 * np.einsum("vi,ij,vj->v", d, np.linalg.inv(cov), d) - 0.5 * np.linalg.slogdet(cov)[1]
                   + np.log(np.mean(y == k)))
    return np.stack(out, 1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.mark.slow
def test_intensity_alone_cannot_find_the_lesions(msd48):
    """A per-voxel Gaussian classifier on the 4 channel intensities, fitted on the truth of the very
    cases it is scored on (the best case for it): Dice about 0.7-0.9 on the tissues, below 0.1 on the
    lesions (0.00 / 0.00 measured at seed 1; seed 0's three subjects hold a nodule intensity finds at 0.26); even the best threshold on its lesion-vs-rest likelihood ratio stays below 0.2. A rule
    with context (a GM-like blob enclosed by WM-like voxels) finds the heterotopia."""
    images, labels = _case_arrays(msd48)
    brain = labels > 0
    x = np.moveaxis(images, 1, -1)[brain].astype(np.float64)  # [V, 4]
    y = labels[brain]
    classes = np.arange(1, 6)
    loglik = _gaussian_loglik(x, y, classes)
    pred = classes[loglik.argmax(1)]
    dice = {int(k): _dice(pred == k, y == k) for k in classes}
    assert min(dice[1], dice[2], dice[3]) > 0.6, dice
    assert max(dice[4], dice[5]) < 0.1, dice
    for k in (4, 5):
        ratio = loglik[:, k - 1] - np.delete(loglik, k - 1, 1).max(1)
        best = max(_dice(ratio > t, y == k) for t in np.quantile(ratio, np.linspace(0.5, 0.9999, 200)))
        assert best < 0.2, (k, best)
    # context: GM-like components (tissue classes only) whose outer shell is WM-like
    tissue = np.zeros(labels.shape, dtype=np.uint8)
    tissue[brain] = 1 + _gaussian_loglik(x, np.where(y >= 4, 2, y), (1, 2, 3)).argmax(1)
    found = np.zeros(labels.shape, dtype=bool)
    for n in range(len(labels)):
        parts, count = ndimage.label(tissue[n] == 2)
        for part in range(1, count + 1):
            blob = parts == part
            shell = ndimage.binary_dilation(blob) & ~blob
            if np.mean(tissue[n][shell] == 3) > 0.9:
                found[n] |= blob
    assert _dice(found, labels == 4) > dice[4] + 0.3, _dice(found, labels == 4)
