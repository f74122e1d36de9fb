"""The pretraining-cohort check: a fine-tuning run whose test case is a pretraining scan under another name (and
re-saved in another orientation and dtype) is found by content and refused; a disjoint cohort passes. Run folders
are written by hand (config.yaml's data section, splits.json) over tiny NIfTI files (8³)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from asa.api.cohort import check_cohort
from asa.api.machinery.cohort import COHORT_FILE, pretraining_cohort
from asa.cli.cohort import main as cohort_main
from asa.data.digests import volume_digest

SHAPE = (8, 8, 8)


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, SHAPE).astype(np.int16)


def _save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def _run(folder: Path, data: dict, splits: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    (folder / "splits.json").write_text(json.dumps(splits))
    return folder


def _pretraining(tmp_path: Path) -> Path:
    """A BIDS cohort of 4 subjects: sub-01..03 in train/val, sub-04 in the pretraining test part (never seen)."""
    root = tmp_path / "oasis"
    for s in range(1, 5):
        _save(_volume(s), root / f"sub-0{s}" / "anat" / f"sub-0{s}_T1w.nii.gz")
    data = {"name": "oasis", "layout": "bids", "root": str(root), "demo": None}
    ids = [f"sub-0{s}" for s in range(1, 5)]
    return _run(tmp_path / "pretrain", data, {"train": ids[:2], "val": ids[2:3], "test": ids[3:]})


def _finetuning(tmp_path: Path, t1_of: dict[str, np.ndarray], affine: dict | None = None) -> Path:
    """A BraTS-layout run with 3 cases: 00001 train, 00002 val, 00003 test; t1_of sets a case's t1."""
    root = tmp_path / "brats"
    for n in range(1, 4):
        case = f"BraTS2021_0000{n}"
        for k, channel in enumerate(("t1", "t1ce", "t2", "flair")):
            array = t1_of.get(case) if channel == "t1" and case in t1_of else _volume(100 + 10 * n + k)
            _save(array, root / case / f"{case}_{channel}.nii.gz", (affine or {}).get(case) if channel == "t1" else None)
        _save(np.zeros(SHAPE, np.uint8), root / case / f"{case}_seg.nii.gz")
    data = {"name": "brats", "layout": "brats", "root": str(root), "demo": None}
    return _run(tmp_path / "finetune", data, {"train": ["BraTS2021_00001"], "val": ["BraTS2021_00002"],
                                              "test": ["BraTS2021_00003"]})


def test_digest_ignores_name_orientation_and_dtype_but_not_content(tmp_path):
    a = _save(_volume(1), tmp_path / "a.nii.gz")
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = SHAPE[0] - 1  # the same voxels in space, stored left-right reversed (LAS)
    copy = _save(_volume(1)[::-1].astype(np.float32), tmp_path / "renamed.nii", flipped)
    other = _save(_volume(1) + np.int16(1), tmp_path / "b.nii.gz")
    assert volume_digest(a) == volume_digest(copy) != volume_digest(other)


def test_disjoint_cohort_passes(tmp_path, capsys):
    pre, fine = _pretraining(tmp_path), _finetuning(tmp_path, {})
    report = check_cohort(pre, fine, workers=2)
    assert report["cohort_size"] == 3
    assert all(not part["overlapping"] for part in report["subsets"].values())
    assert report["lines"][1].startswith("test: 0 of 1 case(s) in the pretraining cohort (3 cases)")
    assert cohort_main([str(pre), str(fine)]) == 0
    assert (pre / COHORT_FILE).is_file()


def test_renamed_copy_of_a_pretraining_scan_in_test_is_refused(tmp_path, capsys):
    pre = _pretraining(tmp_path)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = SHAPE[0] - 1
    # test case 00003's t1 is sub-02's scan (train), stored reversed in float32; val 00002's is sub-04's (the
    # pretraining test part, never seen by the encoder)
    fine = _finetuning(tmp_path, {"BraTS2021_00003": _volume(2)[::-1].astype(np.float32),
                                  "BraTS2021_00002": _volume(4)}, {"BraTS2021_00003": flipped})
    report = check_cohort(pre, fine, workers=2)
    test, val = report["subsets"]["test"], report["subsets"]["val"]
    assert test["overlapping"] == ["BraTS2021_00003"] and test["by_id"] == [] and test["by_subject"] == []
    assert test["by_content"] == [{"case": "BraTS2021_00003", "matches": ["sub-02"]}]
    assert val["overlapping"] == []
    assert "test: 1 of 1 case(s)" in report["lines"][1] and "BraTS2021_00003 = sub-02" in report["lines"][1]
    out = tmp_path / "overlap.json"
    assert cohort_main([str(pre), str(fine), "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert "by image content 1" in captured.out and "--accept-overlap" in captured.err
    assert json.loads(out.read_text())["subsets"]["test"]["overlapping"] == ["BraTS2021_00003"]
    assert cohort_main([str(pre), str(fine), "--accept-overlap"]) == 0


def test_same_subject_id_counts_and_cohort_is_reused(tmp_path):
    pre = _pretraining(tmp_path)
    cohort = pretraining_cohort(pre)
    assert set(cohort["cases"]) == {"sub-01", "sub-02", "sub-03", "sub-04"}
    assert cohort["cases"]["sub-04"]["part"] == "test"
    (pre / COHORT_FILE).write_text(json.dumps({**cohort, "marker": 1}))
    assert pretraining_cohort(pre)["marker"] == 1  # kept: the images are read once
    # a fine-tuning BIDS run on the same subjects: sub-01 (pretraining train) in its test part, by id
    root = tmp_path / "oasis"
    fine = _run(tmp_path / "probe", {"name": "oasis", "layout": "bids", "root": str(root), "demo": None},
                {"train": ["sub-03"], "val": ["sub-04"], "test": ["sub-01"]})
    report = check_cohort(pre, fine)
    assert report["subsets"]["test"]["overlapping"] == ["sub-01"]
    assert len(report["subsets"]["test"]["by_id"]) == len(report["subsets"]["test"]["by_subject"]) == 1
    assert report["subsets"]["val"]["overlapping"] == []  # sub-04 was in the pretraining test part


def test_not_a_run_folder_is_refused(tmp_path, capsys):
    assert cohort_main([str(tmp_path), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_model_card_states_the_cohort_digest(tmp_path):
    """An encoder exported from a pretraining run whose cohort was recorded names it in config.json and the card:
    the seen cases and images and one digest of them all."""
    from asa.api.export import export_model
    from asa.data.cohort import cohort_digest
    from asa.io import save_checkpoint
    from asa.models import network_spec
    from asa.models.cnn.resenc import resenc_unet

    pre = _pretraining(tmp_path)
    cohort = pretraining_cohort(pre, workers=1)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    (pre / "checkpoints").mkdir()
    save_checkpoint(pre / "checkpoints" / "last.pt", {"model": net.state_dict(), "network": network_spec(net)})
    out = export_model(pre / "checkpoints" / "last.pt", tmp_path / "model")
    recorded = json.loads((out / "config.json").read_text())["pretraining_cohort"]
    assert recorded == {**cohort_digest(cohort), "carried": "digests"} and (recorded["cases"], recorded["images"]) == (3, 3)
    assert f"pretraining cohort: 3 cases, 3 images, digest `{recorded['digest']}`" in (out / "README.md").read_text()


def test_the_pretraining_run_alone_records_its_cohort(tmp_path, capsys):
    pre = _pretraining(tmp_path)
    assert cohort_main([str(pre)]) == 0
    assert "recorded 3 seen case(s), 3 image digest(s)" in capsys.readouterr().out
    assert set(json.loads((pre / COHORT_FILE).read_text())["cases"]) == {"sub-01", "sub-02", "sub-03", "sub-04"}


def _with_kind(run: Path, key: str) -> Path:
    """``run`` whose config.yaml records a pretraining ``method`` or a fine-tuning ``task``, as real runs do."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, key: {"name": "mae" if key == "method" else "seg"}}))
    return run


def test_swapped_or_wrong_runs_are_refused_naming_the_argument(tmp_path, capsys):
    pre, fine = _with_kind(_pretraining(tmp_path), "method"), _with_kind(_finetuning(tmp_path, {}), "task")
    assert cohort_main([str(fine), str(pre)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the two arguments look swapped" in err
    assert f"asa-cohort {pre} {fine}" in err
    assert cohort_main([str(fine), str(fine)]) == 2
    assert f"refused: PRETRAIN_RUN={fine} is a fine-tuning run" in capsys.readouterr().err
    assert cohort_main([str(pre), str(pre)]) == 2
    assert f"refused: FINETUNE_RUN={pre} is a pretraining run" in capsys.readouterr().err
    assert cohort_main([str(fine)]) == 2  # recording a cohort: the pretraining run alone
    assert f"PRETRAIN_RUN={fine} is a fine-tuning run" in capsys.readouterr().err
    assert not (fine / COHORT_FILE).exists() and not (pre / COHORT_FILE).exists()  # refused before any image is read
    assert cohort_main([str(pre), str(fine)]) == 0
