"""The template subjects' realism options: lesions with no location prior, whole heads in noisy air,
multi-contrast BIDS cohorts; the defaults stay the subjects as ever."""
from __future__ import annotations

import numpy as np
import pytest

from asa.cli.demo_data import build_parser, main
from asa.data import discover, write_demo_dataset


def test_help_shows_the_realism_options():
    text = build_parser().format_help()
    for option in ("--placement", "{fixed,free,planted}", "--skull", "--contrasts", "_ce-gadolinium_T1w", "_FLAIR"):
        assert option in text


@pytest.mark.parametrize("kwargs, words", [
    ({"layout": "msd", "anatomy": True, "placement": "free"}, ["placement='free' (--placement)", "lesions=True"]),
    ({"layout": "msd", "anatomy": True, "lesions": True, "placement": "near"}, ["placement (--placement)", "'near'"]),
    ({"layout": "msd", "skull": True}, ["skull=True (--skull)", "anatomy=True"]),
    ({"layout": "ibsr", "anatomy": True, "skull": True}, ["skull=True (--skull)", "'ibsr'", "_ana_strip"]),
    ({"layout": "caps", "contrasts": ("t1", "t2")}, ["(--contrasts)", "'caps'"]),
    ({"layout": "bids", "contrasts": ("t2", "t1")}, ["(--contrasts)", "t1 then"]),
    ({"layout": "bids", "contrasts": ("t1", "pd")}, ["(--contrasts)", "'pd'"]),
])
def test_refusals_name_the_option(tmp_path, kwargs, words):
    layout = kwargs.pop("layout")
    with pytest.raises(ValueError) as err:
        write_demo_dataset(layout, tmp_path / "out", cases=1, size=16, **kwargs)
    for word in words:
        assert word in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_skull_without_anatomy(tmp_path, capsys):
    assert main(["--layout", "bids", "--skull", "--size", "16", "--out", str(tmp_path / "o")]) == 2
    assert "--skull" in capsys.readouterr().err


def test_multi_contrast_bids_cohort_is_read_one_case_per_subject(tmp_path):
    """Phantoms (no nilearn needed): the T1w is the case, its ce-T1w, T2w and FLAIR its channels, each
    the phantom's own contrast; a T1-only cohort still reads as T1 alone."""
    root = write_demo_dataset("bids", tmp_path / "b", cases=3, size=16, seed=1, contrasts=("t1", "t1ce", "t2", "flair"))
    names = sorted(p.name for p in root.rglob("*.nii.gz"))
    assert "sub-DEMO001_ses-M00_ce-gadolinium_T1w.nii.gz" in names and "sub-DEMO002_FLAIR.nii.gz" in names
    assert len(names) == 12
    cases = discover("bids", root)  # full validation: every channel on the case's grid, with contrast
    assert [c.id for c in cases] == ["sub-DEMO001_ses-M00", "sub-DEMO002", "sub-DEMO003_ses-M00"]
    assert all(set(c.images) == {"t1", "t1ce", "t2", "flair"} for c in cases)
    assert cases[1].images["t2"].name == "sub-DEMO002_T2w.nii.gz"
    assert cases[1].images["t1ce"].name == "sub-DEMO002_ce-gadolinium_T1w.nii.gz"
    t1_only = write_demo_dataset("bids", tmp_path / "t1", cases=3, size=16, seed=1)
    assert [set(c.images) for c in discover("bids", t1_only)] == [{"t1"}] * 3
    for a, b in zip(discover("bids", t1_only), cases):  # the T1w files are the same bytes
        assert a.images["t1"].read_bytes() == b.images["t1"].read_bytes()


@pytest.mark.slow
def test_free_placement_spreads_lesions_over_the_tissue():
    """Fixed placement: the deep-grey lesion's mirrored centroid sits within about a voxel of one place in
    every case. Free placement: centroids on both sides, spread over the brain, no place holding the
    lesions of three cases (within two voxels), every lesion inside the brain."""
    pytest.importorskip("nilearn")
    from asa.data import make_anatomy_subject

    centroids, spread = {}, {}
    for placement in ("fixed", "free"):
        points = []
        for index in range(8):
            subject = make_anatomy_subject(32, seed=3, index=index, lesions=True, placement=placement)
            for value in (4, 5):
                assert (subject.labels == value).any(), (placement, index, value)  # 6 mm voxels: small
            points.append(np.argwhere(subject.labels == 5).mean(0))
            if placement == "free":
                assert set(subject.lesions) == {"heterotopia", "grey_enlargement"}
                assert subject.brain_mask[subject.labels >= 4].all()
        points = np.array(points)
        mirrored = np.c_[np.minimum(points[:, 0], 31 - points[:, 0]), points[:, 1:]]
        centroids[placement] = points
        spread[placement] = np.linalg.norm(mirrored - mirrored.mean(0), axis=1)
    assert spread["fixed"].max() < 1.5  # one place (mirrored), every case
    free = centroids["free"]
    assert (free[:, 0] < 15.5).sum() >= 2 and (free[:, 0] > 15.5).sum() >= 2  # both hemispheres
    assert np.median(spread["free"]) > 4.0  # a brain's worth of positions (32 voxels hold ~190 mm)
    near = (np.linalg.norm(free[:, None] - free[None], axis=-1) < 2.0).sum(1) - 1  # other cases within 2 voxels
    assert near.max() <= 1, near  # no fixed place (the fixed placement has every case there)


@pytest.mark.slow
def test_planted_placement_carries_more_and_larger_heterotopia_in_the_same_heads():
    """The planted bed's lesion load: the same heads as free placement (the lesion draws have their own stream), with
    several times the heterotopia voxels, and every subject carrying some; the free subjects are as before."""
    from asa.data.synthetic.anatomy import make_anatomy_subject

    counts = {"free": [], "planted": []}
    for placement in counts:
        for index in range(3):
            subject = make_anatomy_subject(32, seed=0, index=index, lesions=True, placement=placement)
            counts[placement].append(int((subject.labels == 4).sum()))
            healthy = make_anatomy_subject(32, seed=0, index=index)
            np.testing.assert_array_equal(subject.brain_mask, healthy.brain_mask)  # same head and warp
    assert min(counts["planted"]) > 0
    assert sum(counts["planted"]) > 3 * sum(counts["free"])


def test_skull_gives_a_head_in_noisy_air():
    """The whole head: air outside it is Rician (Rayleigh: mean / std = 1.91, never 0), the scalp fat and
    marrow bright and the bone dark in T1, the brain's labels and tissue contrast unchanged in kind;
    the images extend below the brain (the neck)."""
    pytest.importorskip("nilearn")
    from scipy import ndimage

    from asa.data import make_anatomy_subject

    subject = make_anatomy_subject(40, seed=0, index=1, skull=True)
    t1, brain = subject.images["t1"], subject.brain_mask
    assert 4.5 < subject.affine[0, 0] < 6.0  # 40 voxels hold the ~228 mm head
    assert set(np.unique(subject.labels)) == {0, 1, 2, 3}
    head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.15, iterations=2))
    air = ~ndimage.binary_dilation(head, iterations=2)
    air[:, :, :3] = air[:, :, -3:] = False  # edges the warp padded
    assert air.mean() > 0.15 and (t1[air] > 0).all()
    ratio = t1[air].mean() / t1[air].std()
    assert 1.6 < ratio < 2.3, ratio  # Rayleigh: sqrt(pi/2) / sqrt(2 - pi/2) = 1.91
    assert t1[air].mean() < 0.06
    shell = ndimage.binary_dilation(brain, iterations=4) & ~ndimage.binary_dilation(brain, iterations=1)
    assert np.percentile(t1[shell], 95) > 0.7 and np.percentile(t1[shell], 5) < 0.15  # fat / marrow, bone / CSF
    lowest_brain = np.argwhere(brain)[:, 2].min()
    assert (head[:, :, : max(lowest_brain - 2, 1)]).sum() > 20  # the neck goes on below
    wm, gm = (np.median(t1[subject.labels == k]) for k in (3, 2))
    assert wm > gm > np.median(t1[subject.labels == 1])
