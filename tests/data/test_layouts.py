from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from asa.cli.demo_data import main
from asa.data import CaseError, detect_layout, discover, get_task, load_volume
from asa.data.synthetic.demo import write_nifti

EXPECTED = {  # layout: (channels, has label, stored orientation of the first case)
    "bids": (("t1",), False, ("R", "A", "S")),
    "caps": (("t1",), False, ("R", "A", "S")),
    "filelist": (("t1",), False, ("R", "A", "S")),
    "brats": (("t1", "t1ce", "t2", "flair"), True, ("L", "P", "S")),
    "ibsr": (("t1",), True, ("L", "I", "A")),
    "wmh": (("t1", "flair"), True, ("L", "A", "S")),
    "msd": (("FLAIR", "T1w", "T1gd", "T2w"), True, ("R", "A", "S")),
}


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_cli_writes_every_layout_and_adapter_reads_it(tmp_path, layout):
    assert main(["--layout", layout, "--out", str(tmp_path), "--cases", "3", "--size", "24", "--seed", "1"]) == 0
    assert detect_layout(tmp_path) == layout
    cases = discover(layout, tmp_path)
    channels, has_label, axcodes = EXPECTED[layout]
    assert len(cases) == 3 and len({c.id for c in cases}) == 3
    for case in cases:
        assert case.channels == channels
        assert (case.label is not None) == has_label
        assert all(p.is_file() for p in case.paths())
    first = load_volume(cases[0].images[channels[0]])
    assert first.original_axcodes == axcodes and first.shape == (24, 24, 24)
    if has_label:
        task = get_task(layout, tmp_path)
        lab = load_volume(cases[0].label, label=True)
        assert set(np.unique(lab.array)) <= set(task.label_values)
        # labels sit inside the brain of the (canonical) image
        assert np.all(first.array[lab.array > 0] > 0)


def test_brats_demo_has_all_tumour_labels(demo_root):
    for case in discover("brats", demo_root("brats")):
        assert set(np.unique(load_volume(case.label).array)) == {0, 1, 2, 4}


@pytest.mark.slow
def test_console_script_subprocess(tmp_path):
    exe = shutil.which("asa-demo-data")
    cmd = [exe] if exe else [sys.executable, "-m", "asa.cli.demo_data"]
    res = subprocess.run([*cmd, "--layout", "ibsr", "--out", str(tmp_path), "--cases", "2", "--size", "16"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(discover("ibsr", tmp_path)) == 2
    helptext = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "--layout" in helptext and "BraTS2021_XXXXX" in helptext


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--layout", "nope", "--out", str(tmp_path)])
    assert main(["--layout", "bids", "--out", str(tmp_path), "--cases", "0"]) == 2
    assert "cases" in capsys.readouterr().err


def _copy(demo_root, layout, tmp_path):
    return shutil.copytree(demo_root(layout), tmp_path / layout)


def _brats_faults(root):
    """Break three of the cases' files in different ways; return {case id: expected reason}."""
    ids = sorted(p.name for p in root.iterdir())
    (root / ids[0] / f"{ids[0]}_t1ce.nii.gz").unlink()
    seg = load_volume(root / ids[1] / f"{ids[1]}_seg.nii.gz")
    bad = seg.array.copy()
    bad[0, 0, 0] = 3
    from asa.data import save_volume

    save_volume(bad, seg, root / ids[1] / f"{ids[1]}_seg.nii.gz")
    flair = root / ids[2] / f"{ids[2]}_flair.nii.gz"
    img = nib.load(flair)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-1], img.affine, img.header), flair)
    return {ids[0]: "missing modality 't1ce'", ids[1]: r"label values \[3\]", ids[2]: "shape mismatch"}


def test_bad_cases_error_names_each(demo_root, tmp_path):
    root = _copy(demo_root, "brats", tmp_path)
    reasons = _brats_faults(root)
    with pytest.raises(CaseError) as err:
        discover("brats", root)
    for cid, why in reasons.items():
        assert cid in str(err.value)
        assert __import__("re").search(why, str(err.value))


def test_skip_mode_writes_report(demo_root, tmp_path):
    root = _copy(demo_root, "brats", tmp_path)
    extra = root / "BraTS2021_DEMO_00099"
    shutil.copytree(root / "BraTS2021_DEMO_00000", extra)
    for f in extra.iterdir():
        f.rename(extra / f.name.replace("00000", "00099"))
    reasons = _brats_faults(root)
    report = tmp_path / "skipped.json"
    cases = discover("brats", root, on_bad_case="skip", report_path=report)
    assert [c.id for c in cases] == ["BraTS2021_DEMO_00099"]
    data = json.loads(report.read_text())
    assert data["kept"] == 1 and data["found"] == 4
    assert {s["id"] for s in data["skipped"]} == set(reasons)
    for s in data["skipped"]:
        assert __import__("re").search(reasons[s["id"]], s["reason"])


def test_affine_mismatch_and_duplicates(demo_root, tmp_path):
    root = _copy(demo_root, "wmh", tmp_path)
    t1 = sorted(root.rglob("T1.nii.gz"))[0]
    img = nib.load(t1)
    aff = img.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), t1)
    cases = discover("wmh", root, on_bad_case="skip", report_path=tmp_path / "r.json")
    assert len(cases) == 2
    assert "affine mismatch" in json.loads((tmp_path / "r.json").read_text())["skipped"][0]["reason"]

    listing = tmp_path / "files.txt"
    bids = demo_root("bids")
    t1s = sorted(bids.rglob("*_T1w.nii.gz"))
    listing.write_text(f"{t1s[0]}\n{t1s[0]}\n{t1s[1]}\n")
    with pytest.raises(CaseError, match="duplicate case id"):
        discover("filelist", listing)
    assert len(discover("filelist", listing, on_bad_case="skip")) == 1


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover("brats", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no usable cases"):
        discover("ibsr", tmp_path)
    with pytest.raises(ValueError, match="unknown layout"):
        discover("oasis", tmp_path)


def test_msd_4d_images(tmp_path):
    """Original MSD: one 4D image per case listed in dataset.json, channels as frames."""
    from asa.data.synthetic.phantom import make_phantom

    ph = make_phantom(16, seed=3, tumour=True)
    stacked = np.stack([ph.images["flair"], ph.images["t1"]], axis=-1)
    nib.save(nib.Nifti1Image(stacked, ph.affine), (tmp_path / "imagesTr").mkdir() or tmp_path / "imagesTr" / "BRATS_001.nii.gz")
    write_nifti(ph.tumour.clip(0, 2), ph.affine, tmp_path / "labelsTr" / "BRATS_001.nii.gz", "RAS", np.uint8)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
    }))
    (case,) = discover("msd", tmp_path)
    task = get_task("msd", tmp_path)
    assert task.channels == ("FLAIR", "T1w") and task.output_names == ("edema", "tumour") and task.num_outputs == 3
    assert case.frame("T1w") == 1
    from asa.data import preprocess_for_inference

    image, ref = preprocess_for_inference(case, task)
    assert image.shape == (2, 16, 16, 16)


def test_layout_names_are_listed_once_and_every_adapter_and_demo_writer_uses_them():
    from asa.data import LAYOUTS, PRETRAIN_LAYOUTS, SEGMENTATION_LAYOUTS
    from asa.data.synthetic.demo import _WRITERS
    from asa.data.layouts.base import ADAPTERS, register

    assert tuple(ADAPTERS) == LAYOUTS == PRETRAIN_LAYOUTS + SEGMENTATION_LAYOUTS
    assert set(_WRITERS) == set(LAYOUTS) == set(EXPECTED)
    assert {name for name in LAYOUTS if EXPECTED[name][1]} == set(SEGMENTATION_LAYOUTS)  # the labelled ones
    with pytest.raises(ValueError, match="'nifti_dir' is not in asa.data.layouts.names.LAYOUTS"):
        register("nifti_dir", "*.nii.gz")


def test_a_file_list_carries_the_other_contrasts_in_columns_of_their_own(tmp_path):
    """Columns t1ce / t2 / flair beside path are channels (an empty cell: the case lacks it); a listed file that
    is missing skips its case naming the file and the channel; columns of no channel are not read."""
    rng = np.random.default_rng(0)
    for name in ("a_T1w", "a_T2w", "a_FLAIR", "b_T1w", "b_T2w", "c_T1w"):
        image = rng.uniform(0.5, 1.0, (8, 8, 8)).astype(np.float32)
        write_nifti(image, np.eye(4), tmp_path / f"{name}.nii.gz", "RAS", np.float32)
    (tmp_path / "files.csv").write_text("id,path,flair,t2,age\n"
                                        "a,a_T1w.nii.gz,a_FLAIR.nii.gz,a_T2w.nii.gz,70\n"
                                        "b,b_T1w.nii.gz,,b_T2w.nii.gz,71\n"
                                        "c,c_T1w.nii.gz,,c_T2w.nii.gz,72\n")
    report = tmp_path / "skipped.json"
    cases = {c.id: c for c in discover("filelist", tmp_path, on_bad_case="skip", report_path=report)}
    assert sorted(cases) == ["a", "b"]
    assert cases["a"].images == {"t1": tmp_path / "a_T1w.nii.gz", "flair": tmp_path / "a_FLAIR.nii.gz",
                                 "t2": tmp_path / "a_T2w.nii.gz"}
    assert cases["b"].channels == ("t1", "t2")
    (skipped,) = json.loads(report.read_text())["skipped"]
    assert skipped["id"] == "c" and f"{tmp_path / 'c_T2w.nii.gz'} (t2)" in skipped["reason"]


@pytest.mark.parametrize("name, channel", [("T1w", "t1"), ("t1", "t1"), ("T1gd", "t1ce"), ("t1ce", "t1ce"),
                                           ("T1c", "t1ce"), ("T2w", "t2"), ("FLAIR", "flair"), ("T2_FLAIR", "flair"),
                                           ("ADC", None), ("CT", None), ("T2star", None)])
def test_a_labeled_sets_channel_names_are_read_as_the_pretraining_channels(name, channel):
    from asa.data.layouts.pretrain import channel_of

    assert channel_of(name) == channel
