"""Case targets from participants.tsv (+ sessions), CSV and dataset.json: kinds, class order, skips, errors."""
from __future__ import annotations

import json

import pytest

from asa.data import Case, Targets, discover, read_targets, write_demo_dataset


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_continuous_from_participants_with_missing_and_words_skipped(tmp_path):
    table = _write(tmp_path / "participants.tsv", "participant_id\tage\tsex\n"
                   "sub-01\t71.5\tF\n02\t64\tM\nsub-03\tn/a\tF\nsub-04\t\tM\nsub-05\tunknown\tF\nsub-06\tinf\tM\n")
    t = read_targets(tmp_path, "age", kind="continuous")  # the folder: its participants.tsv
    assert (t.kind, t.names, t.source, t.column) == ("continuous", (), str(table), "age")
    assert t.values == {"sub-01": 71.5, "sub-02": 64.0}  # "02" gets its sub- prefix
    assert set(t.skipped) == {"sub-03", "sub-04", "sub-05", "sub-06"}
    assert t.skipped["sub-03"] == "participants.tsv line 4: missing value 'n/a'"
    assert t.skipped["sub-04"] == "participants.tsv line 5: missing value (empty)"
    assert t.skipped["sub-05"] == "participants.tsv line 6: not a number: 'unknown'"
    assert "not finite" in t.skipped["sub-06"]
    assert "sub-05: participants.tsv line 6: not a number" in t.summary()


def test_auto_refuses_a_column_mixing_numbers_and_words(tmp_path):
    _write(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t70\nsub-02\tabout 60\n")
    with pytest.raises(ValueError, match=r"participants.tsv, column 'age': 1 value\(s\) are numbers and 1 are not "
                                         r"\(e.g. participants.tsv line 3: 'about 60'\)"):
        read_targets(tmp_path, "age")
    assert read_targets(tmp_path, "age", kind="continuous").values == {"sub-01": 70.0}


def test_sessions_tsv_gives_per_visit_values_and_wins_over_the_subject_row(tmp_path):
    _write(tmp_path / "participants.tsv", "participant_id\tage\tdiagnosis\nsub-01\t70\tCN\nsub-02\t80\tAD\n")
    _write(tmp_path / "sub-01" / "sub-01_sessions.tsv", "session_id\tage\nses-M00\t70\nM24\t72\nses-M48\tn/a\n")
    t = read_targets(tmp_path / "participants.tsv", "age")
    assert t.kind == "continuous"
    assert t.values == {"sub-01": 70.0, "sub-01_ses-M00": 70.0, "sub-01_ses-M24": 72.0, "sub-02": 80.0}
    cases = [Case("sub-01_ses-M24_run-2", {}, meta={"subject": "01", "session": "M24"}),
             Case("sub-01_ses-M48", {}, meta={"subject": "01", "session": "M48"}),
             Case("sub-02_ses-M00", {}, meta={"subject": "02", "session": "M00"}),  # subject-level value
             Case("sub-09", {}, meta={"subject": "09"})]
    got = t.for_cases(cases)
    assert got.values == {"sub-01_ses-M24_run-2": 72.0, "sub-02_ses-M00": 80.0}
    # the session's own missing age is reported, never replaced by the subject's age at baseline
    assert got.skipped["sub-01_ses-M48"].startswith("sub-01/sub-01_sessions.tsv line 4: missing value")
    assert got.skipped["sub-09"] == f"no row for sub-09 in {tmp_path / 'participants.tsv'}"
    # the sessions.tsv do not hold 'diagnosis': subject-level classes apply to every session
    d = read_targets(tmp_path, "diagnosis", classes=["CN", "AD"]).for_cases(cases[:3])
    assert (d.kind, d.names, d.values) == ("binary", ("CN", "AD"), {"sub-01_ses-M24_run-2": 0, "sub-01_ses-M48": 0,
                                                                     "sub-02_ses-M00": 1})


def test_session_rows_of_a_clinicadl_style_table(tmp_path):
    _write(tmp_path / "labels.tsv", "participant_id\tsession_id\tdiagnosis\nsub-A\tses-M00\tCN\nsub-A\tses-M12\tMCI\n"
                                    "sub-B\tM00\tAD\n")
    t = read_targets(tmp_path / "labels.tsv", "diagnosis")
    assert (t.kind, t.names) == ("multiclass", ("AD", "CN", "MCI"))  # sorted when no classes are given
    assert t.values == {"sub-A_ses-M00": 1, "sub-A_ses-M12": 2, "sub-B_ses-M00": 0}
    ordered = read_targets(tmp_path / "labels.tsv", "diagnosis", classes=["CN", "MCI", "AD"])
    assert ordered.values == {"sub-A_ses-M00": 0, "sub-A_ses-M12": 1, "sub-B_ses-M00": 2}
    assert ordered.counts() == {"CN": 1, "MCI": 1, "AD": 1}
    _write(tmp_path / "dup.tsv", "participant_id\tsession_id\tdiagnosis\nsub-A\tM00\tCN\nsub-A\tses-M00\tAD\n")
    with pytest.raises(ValueError, match=r"dup.tsv: sub-A_ses-M00 appears on lines 2 and 3"):
        read_targets(tmp_path / "dup.tsv", "diagnosis")


def test_csv_binary_numbers_and_class_filter(tmp_path):
    path = _write(tmp_path / "targets.csv", "case_id,target\nc1,1\nc2,0.0\nc3,0\nc4,NaN\n")
    t = read_targets(path)
    assert (t.kind, t.names, t.values) == ("binary", ("0", "1"), {"c1": 1, "c2": 0, "c3": 0})
    assert t.skipped == {"c4": "targets.csv line 5: missing value 'NaN'"}
    # integer codes with three values are continuous under auto; say multiclass to get classes
    _write(path, "case_id,target\nc1,0\nc2,2\nc3,1\nc4,10\n")
    assert read_targets(path).kind == "continuous"
    m = read_targets(path, kind="multiclass")
    assert m.names == ("0", "1", "2", "10") and m.values == {"c1": 0, "c2": 2, "c3": 1, "c4": 3}  # numeric order
    # classes given: other values are skipped and reported (e.g. CN vs AD out of an ADNI table)
    _write(path, "id,dx\nc1,CN\nc2,EMCI\nc3,AD\n")
    f = read_targets(path, "dx", classes=("CN", "AD"))
    assert (f.kind, f.values) == ("binary", {"c1": 0, "c3": 1})
    assert f.skipped == {"c2": "targets.csv line 3: class 'EMCI' is not one of the classes ['CN', 'AD']"}
    with pytest.raises(ValueError, match=r"targets.csv, column 'dx': a binary target needs exactly two classes, "
                                         r"found \['AD', 'CN', 'EMCI'\]; pass classes"):
        read_targets(path, "dx", kind="binary")


def test_dataset_json_training_entries_and_mapping(tmp_path):
    path = _write(tmp_path / "dataset.json", json.dumps({
        "name": "x", "training": [
            {"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz", "grade": "high"},
            {"image": "./imagesTr/la_004.nii.gz", "grade": "low"},
            {"case_id": "la_005", "grade": None},
            {"image": "./imagesTr/la_006.nii.gz"}]}))
    t = read_targets(tmp_path, "grade", classes=["low", "high"])  # the folder: its dataset.json
    assert t.values == {"la_003": 1, "la_004": 0}
    assert set(t.skipped) == {"la_005", "la_006"} and "dataset.json training[2]: missing value" in t.skipped["la_005"]
    _write(path, json.dumps({"age": {"a": 61, "b": 70.5, "c": "n/a"}}))
    t = read_targets(path, "age")
    assert (t.kind, t.values, list(t.skipped)) == ("continuous", {"a": 61.0, "b": 70.5}, ["c"])
    with pytest.raises(ValueError, match=r"dataset.json: no target 'sex'"):
        read_targets(path, "sex")


def test_errors_name_the_file_and_the_column(tmp_path):
    _write(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t70\n")
    with pytest.raises(ValueError, match=r"participants.tsv: no column 'diagnosis' nor in any "
                                         r"sub-\*/sub-\*_sessions.tsv next to it; "
                                         r"the table's columns are \['participant_id', 'age'\]"):
        read_targets(tmp_path, "diagnosis")
    _write(tmp_path / "t.csv", "case,target\na,1\n")
    with pytest.raises(ValueError, match=r"t.csv: no id column 'case_id' or 'id'"):
        read_targets(tmp_path / "t.csv")
    assert read_targets(tmp_path / "t.csv", id_column="case", kind="continuous").values == {"a": 1.0}
    _write(tmp_path / "d.csv", "id,target\na,1\na,2\n")
    with pytest.raises(ValueError, match=r"d.csv: case 'a' appears on lines 2 and 3"):
        read_targets(tmp_path / "d.csv")
    _write(tmp_path / "one.csv", "id,target\na,CN\nb,CN\n")
    with pytest.raises(ValueError, match=r"one.csv, column 'target': a class target needs at least two classes, "
                                         r"found \['CN'\]"):
        read_targets(tmp_path / "one.csv")
    _write(tmp_path / "none.csv", "id,target\na,\nb,n/a\n")
    with pytest.raises(ValueError, match=r"none.csv, column 'target': no target values \(all 2 missing\)"):
        read_targets(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        read_targets(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="kind must be"):
        read_targets(tmp_path / "t.csv", kind="ordinal")
    with pytest.raises(ValueError, match="classes=\\['a', 'b'\\] given for a continuous target"):
        read_targets(tmp_path / "t.csv", id_column="case", kind="continuous", classes=["a", "b"])


@pytest.mark.parametrize("layout", ["bids", "caps", "filelist"])
def test_demo_targets_reach_every_case_of_each_t1_layout(tmp_path, layout):
    root = write_demo_dataset(layout, tmp_path / layout, cases=4, size=20, seed=1, targets=True)
    cases = discover(layout, root)
    source = root / "files.csv" if layout == "filelist" else root
    age = read_targets(source, "age").for_cases(cases)
    dx = read_targets(source, "diagnosis", classes=["CN", "MCI", "AD"]).for_cases(cases)
    sex = read_targets(source, "sex", classes=["F", "M"]).for_cases(cases)
    assert isinstance(age, Targets) and age.kind == "continuous" and dx.kind == "multiclass" and sex.kind == "binary"
    for t in (age, dx, sex):
        assert set(t.values) == {c.id for c in cases} and not t.skipped
    assert all(55 <= a < 90 for a in age.values.values())
    assert sorted(dx.values[c.id] for c in cases[:3]) == [0, 1, 2]  # balanced in each block of three subjects
