"""Faults whose message used to hide the cause: a text file given as a checkpoint, a store read with
its data root written another way, more folds than subjects, absent classes by index, class names
that differ only in letter case."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from asa.io import CheckpointError, load_checkpoint


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "bad.pt"
    path.write_text("hello, this is not a checkpoint\n")
    return path


@pytest.mark.parametrize("text", ["not a checkpoint\n", '{"weights": 1}\n'])
def test_any_text_file_is_said_not_to_be_a_checkpoint(tmp_path, text):
    path = tmp_path / "notes.pt"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path}: not a checkpoint — .*starting b"):
        load_checkpoint(path)


def test_a_text_file_is_named_and_said_not_to_be_a_checkpoint(text_file):
    import asa

    for load in (load_checkpoint, asa.load_encoder):
        with pytest.raises(CheckpointError, match=rf"^checkpoint {text_file}: not a checkpoint — unreadable or corrupt, "
                                                  r"neither a torch.save archive nor a pickle \(32 bytes, starting "
                                                  r"b'hello, this"):
            load(text_file)


def test_a_text_file_as_a_probe_encoder_is_refused_naming_it(text_file, tmp_path):
    from asa.api import compose_config, probe
    from asa.api.machinery.run import OptionError

    with pytest.raises(OptionError, match=rf"{text_file}: not a checkpoint"):
        probe(compose_config("probe", [f"encoders=[{text_file}]", "data=targets", f"data.root={tmp_path}",
                                       f"output={tmp_path / 'out'}", "device=cpu", "task=case", "task.target=age"]))
    assert not (tmp_path / "out").exists()


def test_a_store_written_from_a_relative_root_is_read_from_the_absolute_one(tmp_path, monkeypatch):
    from asa.api.machinery.dataset import _cases_in_store
    from asa.data import write_demo_dataset
    from asa.data.store_writer import build_store
    from asa.data import discover
    from asa.data.preprocessing import PretrainPreprocess
    from asa.data.store import StoreSettingsError

    root = write_demo_dataset("bids", tmp_path / "d" / "bids60", cases=2, size=32, seed=0)
    monkeypatch.chdir(tmp_path)
    relative = Path("d/bids60")
    build_store(discover("bids", relative), tmp_path / "store", preprocessor=PretrainPreprocess(32), channels=("t1",),
                progress=False, root=str(relative), layout="bids")  # an index of an older asa-preprocess
    data = types.SimpleNamespace(store=str(tmp_path / "store"), on_bad_case="error")
    cases = _cases_in_store(data, root.absolute(), "bids")[0]
    assert sorted(c.id for c in cases) == sorted(json.loads((tmp_path / "store" / "index.json").read_text())["cases"])
    other = write_demo_dataset("bids", tmp_path / "other", cases=2, size=32, seed=1)
    with pytest.raises(StoreSettingsError, match=r"was written from data.root=d/bids60, not .*other"):
        _cases_in_store(data, other, "bids")


def test_more_folds_than_subjects_is_said_once_and_recorded(tmp_path, capsys):
    from asa.api import compose_config, probe
    from asa.data import write_demo_dataset

    data = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=32, seed=0, targets=True)
    record = probe(compose_config("probe", ["encoders=[random:tiny]", "data=targets", f"data.root={data}",
                                            f"output={tmp_path / 'out'}", "device=cpu", "folds=20", "bootstrap=10",
                                            "knn_k=2", "task=case", "task.target=age", "crop=32"]))
    out = capsys.readouterr().out
    assert "6-fold cross-validation (folds=20 asked, but there are only 6 subjects: one subject per fold)" in out
    assert "20-fold" not in out
    assert record["settings"]["folds"] == 6 and record["settings"]["folds_asked"] == 20
    assert record["rows"][0]["folds"] == 6
    assert json.loads((tmp_path / "out" / "probe.json").read_text())["settings"]["folds"] == 6


def test_absent_training_classes_are_named():
    from asa.api.tasks.case import class_weights

    with pytest.raises(ValueError, match=r"no training case of class\(es\) 'MCI', 'AD':"):
        class_weights([0, 0, 1], 4, names=("CN", "SMC", "MCI", "AD"))
    with pytest.raises(ValueError, match=r"no training case of class\(es\) \[2, 3\]:"):
        class_weights([0, 0, 1], 4)  # no names: the indices


def test_class_names_differing_only_in_case_are_flagged(tmp_path):
    from asa.data import read_targets

    (tmp_path / "participants.tsv").write_text("participant_id\tdx\nsub-01\tCN\nsub-02\tcn\nsub-03\tAD\nsub-04\tAD\n")
    with pytest.raises(ValueError, match=r"column 'dx': the classes 'CN' and 'cn' differ only in letter case: a typo\?"):
        read_targets(tmp_path, "dx")
    t = read_targets(tmp_path, "dx", classes=["AD", "CN"])  # chosen classes: the other spelling is left out, said so
    assert t.values == {"sub-01": 1, "sub-03": 0, "sub-04": 0} and "class 'cn' is not one" in t.skipped["sub-02"]
