"""asa-demo-data: never writes into a folder holding files without --overwrite; ids are synthetic."""

from __future__ import annotations

import re

import pytest

from asa.cli.demo_data import main
from asa.data import LAYOUTS, detect_layout, discover
from asa.io.nifti import strip_nifti

REAL_BRATS_ID = re.compile(r"^BraTS2021_\d{5}$")


def test_case_ids_are_synthetic_and_read_by_the_layout(tmp_path):
    out = tmp_path / "brats"
    assert main(["--layout", "brats", "--out", str(out), "--cases", "2", "--size", "16"]) == 0
    ids = [c.id for c in discover("brats", out)]
    assert ids == ["BraTS2021_DEMO_00000", "BraTS2021_DEMO_00001"]
    assert not any(REAL_BRATS_ID.match(i) for i in ids)
    assert main(["--layout", "msd", "--out", str(tmp_path / "msd"), "--cases", "1", "--size", "16"]) == 0
    assert [c.id for c in discover("msd", tmp_path / "msd")] == ["BRATS_DEMO_001"]


DEMO_IDS = {  # two cases of each layout, as its adapter reads them
    "brats": ["BraTS2021_DEMO_00000", "BraTS2021_DEMO_00001"],
    "ibsr": ["IBSR_DEMO_01", "IBSR_DEMO_02"],
    "wmh": ["Singapore_DEMO_1", "Utrecht_DEMO_0"],
    "msd": ["BRATS_DEMO_001", "BRATS_DEMO_002"],
    "bids": ["sub-DEMO001_ses-M00", "sub-DEMO002"],
    "caps": ["sub-DEMO001_ses-M000", "sub-DEMO002_ses-M000"],
    "filelist": ["DEMO_000", "DEMO_001"],
}


def test_every_layouts_demo_ids_say_demo(tmp_path):
    """Real ids look like IBSR_01 (IBSR), Utrecht/0 (WMH), sub-ADNI002S0295 (ADNI): no phantom's id does."""
    assert sorted(DEMO_IDS) == sorted(LAYOUTS)
    for layout, expected in DEMO_IDS.items():
        out = tmp_path / layout
        assert main(["--layout", layout, "--out", str(out), "--cases", "2", "--size", "16"]) == 0
        assert detect_layout(out) == layout
        assert [c.id for c in discover(layout, out)] == expected
        stems = {strip_nifti(p.name) for p in out.rglob("*.nii*")} | {p.name for p in out.rglob("*") if p.is_dir()}
        assert not {s for s in stems if re.fullmatch(r"IBSR_\d+|\d+|sub-\d+|sub-ADNI\d+|case_\d+", s)}


def test_non_empty_out_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["--layout", "brats", "--out", str(out), "--cases", "1", "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "notes.txt" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # with the flag it writes beside what was there
    assert main(["--layout", "brats", "--out", str(out), "--cases", "1", "--size", "16", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "BraTS2021_DEMO_00000").is_dir()


def test_empty_existing_folder_is_fine(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["--layout", "ibsr", "--out", str(out), "--cases", "1", "--size", "16"]) == 0


def test_targets_flag_writes_the_subjects_targets(tmp_path, capsys):
    assert main(["--layout", "bids", "--out", str(tmp_path / "b"), "--cases", "3", "--size", "24", "--targets"]) == 0
    assert "with age, sex and diagnosis" in capsys.readouterr().out
    rows = (tmp_path / "b" / "participants.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:4] == ["participant_id", "age", "sex", "diagnosis"] and len(rows) == 4
    assert main(["--layout", "brats", "--out", str(tmp_path / "t"), "--cases", "2", "--size", "24", "--targets"]) == 2


@pytest.mark.slow
def test_anatomy_flag_writes_template_subjects(tmp_path, capsys):
    pytest.importorskip("nilearn")
    out = tmp_path / "msd"
    assert main(["--layout", "msd", "--anatomy", "--lesions", "--cases", "2", "--size", "32", "--out", str(out)]) == 0
    assert "MNI152 template subject(s) with lesions" in capsys.readouterr().out
    assert [c.id for c in discover("msd", out)] == ["MNI_DEMO_001", "MNI_DEMO_002"]


def test_the_first_run_on_the_demo_data_says_it_generated_them_and_where(tmp_path, monkeypatch, capsys):
    """The phantoms are written on first use into $ASA_CACHE: said once, with the folder; a later run reuses
    them without a word."""
    from asa.api import load_config
    from asa.api.machinery.dataset import dataset_root

    monkeypatch.setenv("ASA_CACHE", str(tmp_path / "cache"))
    data = load_config("pretrain", "data=demo", "data.demo.cases=2", "data.demo.size=16").data
    root, layout = dataset_root(data)
    said = capsys.readouterr().err
    assert root.is_relative_to(tmp_path / "cache") and layout == "bids"
    assert f"[asa] generated the demo data (data=demo: 2 phantom scans, 16³ voxels, layout bids) in {root} " \
           "($ASA_CACHE, default ~/.cache/asa); later runs reuse them" in said
    assert dataset_root(data) == (root, layout) and "generated" not in capsys.readouterr().err
