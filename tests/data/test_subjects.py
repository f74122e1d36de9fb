from __future__ import annotations

import pytest

from asa.data import Case, diseased_labels
from asa.data.layouts.pretrain import filelist
from asa.data.subjects import parse_diseased


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_diseased_from_participants_tsv(tmp_path):
    cases = [Case("sub-01", {"t1": tmp_path / "a"}, meta={"subject": "01"}),
             Case("sub-02_ses-1", {"t1": tmp_path / "b"}, meta={"subject": "02"}),
             Case("sub-03", {"t1": tmp_path / "c"}, meta={"subject": "03"})]
    assert diseased_labels(cases, tmp_path) == {"sub-01": 0.0, "sub-02_ses-1": 0.0, "sub-03": 0.0}  # no table
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tdiseased\nsub-01\t70\t1\nsub-02\t71\tno\n")
    assert diseased_labels(cases, tmp_path) == {"sub-01": 1.0, "sub-02_ses-1": 0.0, "sub-03": 0.0}
    (tmp_path / "participants.tsv").write_text("participant_id\tdiseased\nsub-01\tmaybe\n")
    with pytest.raises(ValueError, match=r"participants.tsv line 2: diseased value 'maybe'"):
        diseased_labels(cases, tmp_path)


def test_diseased_column_of_a_file_list(tmp_path):
    _touch(tmp_path / "a.nii.gz")
    _touch(tmp_path / "b.nii.gz")
    (tmp_path / "files.csv").write_text("id,path,diseased\nA,a.nii.gz,1\nB,b.nii.gz,\n")
    cases = filelist(tmp_path / "files.csv").cases
    assert diseased_labels(cases) == {"A": 1.0, "B": 0.0}


@pytest.mark.parametrize("value, expected", [("1", 1.0), ("TRUE", 1.0), ("yes", 1.0), ("0", 0.0), ("", 0.0),
                                             (None, 0.0), ("n/a", 0.0), ("false", 0.0)])
def test_parse_diseased(value, expected):
    assert parse_diseased(value, "here") == expected
