"""asa-prepare end to end on tiny skull-stripped brains (``asa-demo-data --anatomy`` at 24^3, about 7 mm
voxels, with a T2; prepared on a 6 mm grid with ``--brain none``, so that ANTs alone is needed): the prepared
folder is one asa's BIDS reader reads, with its channels; it says it is MNI-aligned; a rerun does only
what is missing; a shard does its part; a case that fails is listed while the others are prepared; a
prediction goes back to the native scan."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("ants")
pytest.importorskip("nilearn")
pytestmark = pytest.mark.slow  # a pipeline: ANTs' N4 and registrations of every case

from asa.cli.prepare import main  # noqa: E402
from asa.data import discover, write_demo_dataset  # noqa: E402
from asa.data.prepare import PrepareSettings, case_files, prepare, to_native  # noqa: E402

SETTINGS = PrepareSettings(brain="none", spacing=6.0, box="template")
ARGS = ["--brain", "none", "--spacing", "6", "--box", "template", "--no-progress"]


def _raw_and_prepared(folder):
    write_demo_dataset("bids", folder / "raw", cases=2, size=24, seed=0, anatomy=True, contrasts=("t1", "t2"))
    report = prepare(folder / "raw", folder / "prepared", settings=SETTINGS, progress=False)
    assert report.failed == {} and len(report.prepared) == 2


@pytest.fixture(scope="module")
def raw(built_once):
    return built_once("prepare-pipeline", _raw_and_prepared) / "raw"


@pytest.fixture(scope="module")
def prepared(raw):
    return raw.parent / "prepared"


def _t1_alone(raw, source, case) -> None:
    """Copy ``case``'s raw T1 without its T2 into the raw folder ``source``, at its place under ``raw`` (its session
    folder too): a case for a test that reads no contrast (a T2 adds its own N4 and rigid registration, and the T1's
    files do not depend on it)."""
    name = case.images["t1"].relative_to(raw)
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw / name, source / name)


def test_the_prepared_folder_is_read_by_asa_with_its_channels(raw, prepared):
    raw_cases, cases = discover("bids", raw), discover("bids", prepared)
    assert [c.id for c in cases] == [c.id for c in raw_cases]
    assert all(c.channels == ("t1", "t2") for c in cases)
    image = nib.load(str(cases[0].images["t1"]))
    assert np.allclose(np.diag(image.affine)[:3], 6.0)  # the prepared grid: RAS, 6 mm
    description = json.loads((prepared / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "asa-prepare"
    assert description["asa"]["aligned"] == "MNI152NLin2009aSym" and description["asa"]["brain"] == "none"
    for case in raw_cases:
        files = case_files(case)
        record = json.loads((prepared / files.record).read_text())
        assert set(record["transforms"]) == {"t1", "t2"}
        assert all((prepared / p).is_file() for p in record["transforms"].values())
        assert set(record["qc"]) == {"symmetry", "brain_ml", "similarity"}
        assert record["qc"]["similarity"] > 0.5  # the brain lies on the template (0.63, 0.65)
    assert (prepared / "qc" / "index.html").is_file() and (prepared / "qc" / "qc.tsv").is_file()


def test_a_rerun_prepares_only_what_is_missing_and_the_same_seed_gives_the_same_files(raw, prepared, tmp_path):
    """A rerun prepares only the case whose record is gone, and writes its images again as they were: ANTs' sampling
    is seeded (ANTs reads a seed of 0 as the clock: asa passes seed + 1)."""
    out = shutil.copytree(prepared, tmp_path / "prepared")  # the shared folder stays as it is; the copy keeps mtimes
    again = prepare(raw, out, settings=SETTINGS, progress=False)
    assert again.prepared == [] and len(again.done) == 2
    first = discover("bids", raw)[0]
    (out / case_files(first).record).unlink()
    redo = prepare(raw, out, settings=SETTINGS, progress=False)
    assert redo.prepared == [first.id] and len(redo.done) == 1
    for channel in ("t1", "t2"):
        name = case_files(first).image(channel)
        assert (out / name).stat().st_mtime_ns != (prepared / name).stat().st_mtime_ns  # written again, not the copy
        assert np.array_equal(np.asarray(nib.load(str(prepared / name)).dataobj),
                              np.asarray(nib.load(str(out / name)).dataobj))


def test_other_settings_are_refused_naming_them(raw, prepared, capsys):
    assert main([str(raw), str(prepared), *ARGS[:-3], "--box", "centre", "--crop", "16", "--no-progress"]) == 2
    assert "box: 'template' there, 'centre' asked" in capsys.readouterr().err


def test_a_failed_case_is_listed_and_the_others_go_on(raw, tmp_path, capsys):
    source = tmp_path / "raw"
    _t1_alone(raw, source, next(c for c in discover("bids", raw) if c.id == "sub-DEMO002"))
    for sub, data in (("BAD", np.zeros((20, 20, 20, 2), np.float32)), ("BLANK", np.zeros((20, 20, 20), np.float32))):
        anat = source / f"sub-{sub}" / "anat"  # two volumes (not one T1) and an empty scan
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(anat / f"sub-{sub}_T1w.nii.gz"))
    out = tmp_path / "prepared"
    # the sorted cases: sub-BAD, sub-BLANK, sub-DEMO002; shard 0/2 takes the first and the third
    assert main([str(source), str(out), *ARGS, "--shard", "0/2"]) == 1
    said = capsys.readouterr()
    failed = json.loads((out / "prepare_failed.shard-0-of-2.json").read_text())["failed"]
    assert [f["id"] for f in failed] == ["sub-BAD"] and "sub-BAD" in said.out
    assert [p.name for p in out.glob("sub-*/**/*_desc-prepare.json")] == ["sub-DEMO002_desc-prepare.json"]
    assert main([str(source), str(out), *ARGS, "--shard", "1/2"]) == 1
    failed = json.loads((out / "prepare_failed.shard-1-of-2.json").read_text())["failed"]
    assert [f["id"] for f in failed] == ["sub-BLANK"] and "the scan is empty" in failed[0]["reason"]


def test_a_head_turned_90_degrees_in_its_header_is_refused_and_not_written(raw, prepared, tmp_path, capsys):
    """A T1 whose header turns it 90 degrees about left-right (the head on its face) registers wrongly: its
    similarity to the template is 0.21-0.34 on these brains, a correct one's 0.63-0.74 (docs/own-data.md). Added to
    a prepared folder it is a failed case (exit 1, named with the similarity), and nothing of it is in the folder or
    on its QC page, which keep the cases there."""
    source = tmp_path / "raw"
    t1 = nib.load(str(raw / "sub-DEMO002" / "anat" / "sub-DEMO002_T1w.nii.gz"))
    turn = np.eye(4)
    turn[1:3, 1:3] = [[0, -1], [1, 0]]
    (source / "sub-TURNED" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj), turn @ t1.affine),
             str(source / "sub-TURNED" / "anat" / "sub-TURNED_T1w.nii.gz"))
    # the shared pair as the cases there (copied: the shared folder stays as it is), so the turned head alone is
    # prepared: a correct case beside it in the same run would repeat the fixture's work; not its QC page, which this
    # run must write
    out = shutil.copytree(prepared, tmp_path / "prepared", ignore=shutil.ignore_patterns("qc"))
    assert main([str(source), str(out), *ARGS]) == 1
    failed = json.loads((out / "prepare_failed.json").read_text())["failed"]
    assert [f["id"] for f in failed] == ["sub-TURNED"]
    assert "registration to the template failed (similarity 0." in failed[0]["reason"]
    assert "sub-TURNED" in capsys.readouterr().out
    assert not (out / "sub-TURNED").exists()
    ids = [c.id for c in discover("bids", raw)]
    assert [c.id for c in discover("bids", out)] == ids
    qc = (out / "qc" / "qc.tsv").read_text()
    assert all(i in qc for i in ids) and "sub-TURNED" not in qc


def test_a_prediction_goes_back_to_the_native_scan(raw, prepared):
    case = discover("bids", raw)[1]
    files = case_files(case)
    record = json.loads((prepared / files.record).read_text())
    native = nib.load(str(case.images["t1"]))
    back = to_native(prepared / record["mask"], prepared / record["transforms"]["t1"], case.images["t1"])
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    labels = np.asarray(back.dataobj)
    assert set(np.unique(labels)) <= {0, 1}
    # the prepared grid holds the whole template brain; back in the scanner it covers the head's upper part
    head = np.asarray(native.dataobj) > 0.2 * np.percentile(np.asarray(native.dataobj), 99)
    assert (labels > 0).sum() > 0.3 * head.sum()


def test_a_moved_contrast_is_registered_back_onto_its_t1(raw, prepared, tmp_path):
    """The T2 of a case, turned 8 degrees and moved 12 mm in its header (the head moved between the two
    scans), comes out of asa-prepare where the T2 that did not move does."""
    case = discover("bids", raw)[1]
    source = tmp_path / "raw"
    shutil.copytree(raw / "sub-DEMO002", source / "sub-DEMO002")
    t2_path = source / "sub-DEMO002" / "anat" / "sub-DEMO002_T2w.nii.gz"
    t2 = nib.load(str(t2_path))
    angle = np.radians(8.0)
    move = np.eye(4)
    move[:3, :3] = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    move[:3, 3] = [12.0, -6.0, 4.0]
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj), move @ t2.affine), str(t2_path))
    out = tmp_path / "prepared"
    assert prepare(source, out, settings=SETTINGS, progress=False).failed == {}
    name = case_files(case).image("t2")
    still = np.asarray(nib.load(str(prepared / name)).dataobj)
    moved = np.asarray(nib.load(str(out / name)).dataobj)
    both = (still > 0) & (moved > 0)
    assert np.corrcoef(still[both], moved[both])[0, 1] > 0.95
    # without the rigid step the moved T2 would lie 14 mm (over two voxels) and 8 degrees off its T1
    unmoved = np.roll(still, 2, axis=0)
    assert np.corrcoef(still[both], unmoved[both])[0, 1] < np.corrcoef(still[both], moved[both])[0, 1]


@pytest.mark.slow
def test_workers_give_the_files_of_one_process(raw, prepared, tmp_path):
    """Two worker processes (one thread each, ANTs' sampling seeded) write the T1s that one process wrote."""
    source = tmp_path / "raw"  # the two cases' T1s alone: what is compared
    for case in discover("bids", raw):
        _t1_alone(raw, source, case)
    out = tmp_path / "prepared"
    report = prepare(source, out, settings=SETTINGS, workers=2, progress=False)
    assert report.failed == {} and sorted(report.prepared) == sorted(c.id for c in discover("bids", raw))
    for case in discover("bids", raw):
        name = case_files(case).image("t1")
        one = np.asarray(nib.load(str(prepared / name)).dataobj)
        two = np.asarray(nib.load(str(out / name)).dataobj)
        assert np.array_equal(one, two)


def test_seeding_ants_leaves_the_process_random_states():
    import random

    from asa.data.prepare.tools import single_thread

    np.random.seed(5)
    random.seed(5)
    expected = np.random.random(), random.random()
    np.random.seed(5)
    random.seed(5)
    single_thread(3)
    assert (np.random.random(), random.random()) == expected
