"""The cohort list beside an encoder is read a case at a time: written one case per line (still one JSON document,
which any JSON reader reads), read back lazily (`asa.data.cohort_list.CohortCases`) with the same answers as the whole
record, an older one-line list still read, a damaged one named; a fine-tuning run's check and its copy of the list
read it once."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import asa.data.cohort as C
import asa.data.cohort_list as L
import asa.data.digests as D
import asa.data.overlap as O
from asa.data.case import Case
from asa.data.fingerprint import FINGERPRINT, GRID, encode_fingerprint
from asa.io.hub import COHORT_LIST


def _record(n: int = 6) -> dict:
    rng = np.random.default_rng(0)
    prints = rng.integers(-127, 128, size=(n, GRID**3), dtype=np.int8)
    return {"format": L.COHORT_FORMAT, "digest": D.DIGEST, "fingerprint": FINGERPRINT, "seen_parts": ["train", "val"],
            "cases": {f"sub-{k}": {"part": "test" if k == n - 1 else "train", "subject": f"{k // 2}",
                                   "images": {"t1": f"sha256:{k:064x}"},
                                   "fingerprints": {"t1": encode_fingerprint(prints[k])}} for k in range(n)}}


def test_the_list_is_one_json_document_one_case_per_line(tmp_path):
    record = _record()
    path = L.write_cohort_list(tmp_path, record)
    text = gzip.decompress(path.read_bytes()).decode()
    assert json.loads(text) == record  # any JSON reader reads it whole
    lines = text.splitlines()
    assert lines[0].endswith('"cases":{') and lines[-1] == "}}" and len(lines) == 2 + len(record["cases"])
    assert path.read_bytes() == L.write_cohort_list(tmp_path / "again", record).read_bytes()  # same cohort, same bytes
    empty = L.write_cohort_list(tmp_path / "empty", {**record, "cases": {}})
    assert L.read_cohort_list(empty) == {**record, "cases": {}} and len(L.read_cohort_list(empty, lazy=True)["cases"]) == 0


def test_a_lazy_list_answers_as_the_whole_record(tmp_path):
    record = _record()
    path = L.write_cohort_list(tmp_path, record)
    lazy = L.read_cohort_list(path, lazy=True)
    assert isinstance(lazy["cases"], L.CohortCases)
    assert dict(lazy["cases"].items()) == record["cases"] and len(lazy["cases"]) == 6
    assert lazy["cases"]["sub-2"] == record["cases"]["sub-2"]
    assert C.cohort_digest(lazy) == C.cohort_digest(record)
    exported = C.export_cohort(lazy, ids=False)
    assert dict(exported["cases"].items()) == C.export_cohort(record, ids=False)["cases"]
    queries = [Case("sub-1", {"t1": tmp_path / "none.nii.gz"}), Case("other", {"t1": tmp_path / "none.nii.gz"})]
    prints = {"other": {"t1": record["cases"]["sub-3"]["fingerprints"]["t1"]}, "sub-1": {}}
    digests = {"other": {"t1": "sha256:" + "f" * 64}, "sub-1": {"t1": record["cases"]["sub-4"]["images"]["t1"]}}
    report = O.cohort_overlap(lazy, {"test": queries}, digests=digests, fingerprints=prints)
    assert report == O.cohort_overlap(record, {"test": queries}, digests=digests, fingerprints=prints)
    test = report["test"]
    assert [m["case"] for m in test["by_id"]] == ["sub-1"] and test["by_content"][0]["matches"] == ["sub-4"]
    assert test["by_near_content"][0]["matches"] == ["sub-3"]  # its exact fingerprint, the part "test" left out


def test_an_older_one_line_list_is_still_read(tmp_path):
    record = _record()
    path = tmp_path / COHORT_LIST
    path.write_bytes(gzip.compress(json.dumps(record).encode(), mtime=0))
    assert L.read_cohort_list(path) == record
    assert dict(L.read_cohort_list(path, lazy=True)["cases"].items()) == record["cases"]


def test_a_damaged_list_is_named(tmp_path):
    path = L.write_cohort_list(tmp_path, _record())
    (tmp_path / "cut.json.gz").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    lazy = L.read_cohort_list(tmp_path / "cut.json.gz", lazy=True)
    with pytest.raises(ValueError, match="cut.json.gz: not a readable cohort list"):
        C.cohort_digest(lazy)


def test_the_check_and_the_kept_copy_read_the_list_once(tmp_path, monkeypatch):
    """A fine-tuning run's start with an encoder carrying a 10^5-case list: its check takes the digest on the
    overlap's own read, and the run keeps a byte copy whose digest is that one (docs/weights-elsewhere.md)."""
    record = _record()
    path = L.write_cohort_list(tmp_path / "encoder", record)
    state = {"cohort": C.cohort_summary(record)}
    reads = []
    stream = L._stream
    monkeypatch.setattr(L, "_stream", lambda p: reads.append(p) or stream(p))
    listed = C.carried_cohort(state, "encoder", tmp_path / "encoder", verify=False)
    cases = [Case("x", {"t1": tmp_path / "x.nii.gz"})]
    O.cohort_overlap(listed, {"test": cases}, digests={"x": {}}, fingerprints={"x": {}})
    C.check_carried_list(state, listed, "encoder")
    again = C.carried_cohort(state, "encoder", tmp_path / "encoder", verify=False)  # write_overlap's own reading
    kept, digest = C.keep_cohort_list(again, tmp_path / "run", "pretraining_cohort.json.gz")
    assert kept.read_bytes() == path.read_bytes() and digest == C.cohort_digest(record)
    assert len([p for p in reads if p == path]) == 3  # two headers and one read of the cases
    # a list of another cohort is refused naming it
    other = _record(4)
    L.write_cohort_list(tmp_path / "other", other)
    with pytest.raises(ValueError, match="the list of another cohort"):
        C.carried_cohort(state, "encoder", tmp_path / "other")
