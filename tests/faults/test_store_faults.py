"""A store is a trust boundary: its index and records are checked before use, every file they name lies
inside the store, and the console scripts refuse a store that breaks this (exit 2, naming the entry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asa.api import preprocess, pretrain
from asa.api.config import compose_config
from asa.cli.common import EXIT_REFUSED, entry
from asa.data.store import StoreIndexError, open_store


def _data(cache: Path, store: Path, *extra: str) -> list[str]:
    return ["data=demo", "data.demo.cases=3", "data.demo.size=32", f"data.demo.cache_dir={cache}",
            f"data.store={store}", "progress=false", "workers=1", *extra]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(demo cache, a store of its 3 cases): copied by the tests that tamper with it."""
    base = tmp_path_factory.mktemp("store")
    preprocess(compose_config("preprocess", _data(base / "cache", base / "store")))
    return base / "cache", base / "store"


def _copy(store: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(store, to)
    return to


def _tamper_index(store: Path, edit) -> dict:
    index = json.loads((store / "index.json").read_text())
    edit(index)
    (store / "index.json").write_text(json.dumps(index))
    return index


@pytest.mark.parametrize("name", ["../../../outside/x.npy", "/etc/passwd", "..", "sub/x.npy"])
def test_an_index_naming_a_file_outside_the_store_is_refused_naming_the_entry(written, tmp_path, name):
    store = _copy(written[1], tmp_path / "store")
    first = sorted(json.loads((store / "index.json").read_text())["cases"])[0]
    _tamper_index(store, lambda index: index["cases"][first]["arrays"].update(image=name))
    with pytest.raises(StoreIndexError, match=rf"index.json cases\['{first}'\]: arrays\['image'\]=.* names a file "
                                              r"outside the store's cases folder"):
        open_store(store)


@pytest.mark.parametrize("index, match", [
    ({"format": "asa-store", "version": 1}, r"index.json: missing key 'settings'"),
    ({"format": "asa-store", "version": 1, "settings": {}}, r"index.json: missing key 'cases'"),
    ({"format": "asa-store", "version": 1, "settings": [], "cases": {}}, r"index.json: settings is list, expected an object"),
    ({"format": "asa-store", "version": 2}, r"not an asa-store index of version 1 \(format 'asa-store', version 2\)"),
    ([1, 2], r"index.json: expected an object, got list"),
    ({"format": "asa-store", "version": 1, "settings": {}, "root": None, "layout": "bids",
      "cases": {"a": {"arrays": {"image": "a.npy"}, "shape": [4, 4], "box": [[0, 0, 0], [4, 4, 4]],
                      "centre": [2, 2, 2], "files": [], "bytes": 1}}},
     r"cases\['a'\]: shape=\[4, 4\] is not 3 positive integers"),
    ({"format": "asa-store", "version": 1, "settings": {}, "root": None, "layout": "bids",
      "cases": {"a": {"arrays": {"image": "a.npy"}, "shape": [4, 4, 4], "box": [[0, 0, 0], [4, 4, 4]],
                      "centre": [2, 2, 2], "bytes": 1}}}, r"cases\['a'\]: missing key 'files'"),
])
def test_an_index_is_checked_against_its_schema_naming_the_key(tmp_path, index, match):
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreIndexError, match=match):
        open_store(tmp_path)



def _pretrain_on(store, cache, out):
    """asa-pretrain's config for a tiny run on ``store`` (demo phantoms of ``cache``) into ``out``."""
    return compose_config("pretrain", ["model=tiny", "trainer=smoke", "data.crop=32", "data.demo.cases=3",
                                       "data.demo.size=32", f"data.demo.cache_dir={cache}", "device=cpu",
                                       "probe.every=0", f"data.store={store}", f"output_dir={out}"])


def _pretraining_refused(store, cache, out, capsys) -> str:
    """Run asa-pretrain on ``store`` (`_pretrain_on`), which must be refused (exit 2); returns its stderr."""
    with pytest.raises(SystemExit) as stop:
        entry("asa-pretrain", pretrain, _pretrain_on(store, cache, out))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    return err

def test_training_from_a_tampered_store_exits_2_naming_the_entry(written, tmp_path, capsys):
    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    first = sorted(json.loads((store / "index.json").read_text())["cases"])[0]
    _tamper_index(store, lambda index: index["cases"][first]["arrays"].update(brain="../../../outside/x.npy"))
    err = _pretraining_refused(store, cache, tmp_path / "run", capsys)
    assert f"refused: data.store={store}: index.json cases['{first}']: arrays['brain']=" in err
    assert "outside the store's cases folder" in err
    assert not (tmp_path / "run").exists()  # refused: no empty run folder left behind


def test_an_array_linked_to_a_file_outside_the_store_is_refused_naming_the_entry(written, tmp_path, capsys):
    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    image = sorted((store / "cases").glob("*.image.npy"))[0]
    outside = tmp_path / "outside.npy"
    outside.write_bytes(image.read_bytes())  # a whole array of the right shape: only where it lies is wrong
    image.unlink()
    image.symlink_to(outside)
    err = _pretraining_refused(store, cache, tmp_path / "run", capsys)
    assert f"arrays['image']: cases/{image.name} resolves to {outside}, outside the store" in err


def test_preprocess_refuses_a_record_naming_a_file_outside_the_store(written, tmp_path, capsys):
    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"not the store's")
    record_path = sorted((store / "cases").glob("*.json"))[0]
    record = json.loads(record_path.read_text())
    record["arrays"]["image"] = str(outside)  # an absolute path that exists: once taken as "unchanged"
    record_path.write_text(json.dumps(record))
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, compose_config("preprocess", _data(cache, store)))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    assert f"cases/{record_path.name}: arrays['image']=" in err and "outside the store's cases folder" in err
    assert outside.read_bytes() == b"not the store's"


def test_a_second_writer_to_a_store_is_refused_while_the_first_holds_its_lock(written, tmp_path, capsys):
    import datetime
    import os
    import socket

    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    before = (store / "index.json").stat().st_mtime_ns
    holder = {"host": socket.gethostname(), "pid": os.getpid(),  # a live process on this host: the first writer
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": "asa-preprocess data=demo"}
    (store / "run.lock").write_text(json.dumps(holder))
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, compose_config("preprocess", _data(cache, store)))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    assert f"refused: data.store={store} is in use by another job: pid {os.getpid()} on this host" in err
    assert "use another data.store" in err
    assert (store / "index.json").stat().st_mtime_ns == before and json.loads((store / "run.lock").read_text()) == holder
    (store / "run.lock").unlink()  # the first writer finished: the next run takes the lock and gives it back
    assert preprocess(compose_config("preprocess", _data(cache, store))).unchanged == 3
    assert not (store / "run.lock").exists()


def test_an_error_inside_a_transform_is_shown_by_its_own_message(written, tmp_path, capsys):
    """MONAI wraps what a transform raises in ``applying transform <object at 0x…>``: the console shows
    the store's own message instead."""
    from monai.transforms import Compose
    from omegaconf import OmegaConf

    from asa.data.store import StorePretrainCrop

    store = _copy(written[1], tmp_path / "store")
    item = open_store(store).items(sorted(open_store(store).records)[:1])[0]
    (Path(item["dir"]) / item["arrays"]["image"]).unlink()

    def run(cfg):
        return Compose([Compose([StorePretrainCrop((32, 32, 32))])])(item)

    with pytest.raises(SystemExit) as stop:
        entry("asa-pretrain", run, OmegaConf.create({}))
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert f"[asa-pretrain] error: case {item['id']}: cannot map " in err and "applying transform" not in err


@pytest.mark.parametrize("hash", [False, True])
@pytest.mark.parametrize("array, cut", [("image", 100), ("brain", 1), ("image", None)])
def test_a_rerun_redoes_a_case_whose_stored_array_is_broken(written, tmp_path, hash, array, cut):
    """A truncated array (``cut`` bytes off its end) or one with another shape in its header is not
    'unchanged': the rerun processes that case again, says why, and leaves arrays that load."""
    import numpy as np

    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    preprocess(compose_config("preprocess", _data(cache, store, f"hash={str(hash).lower()}")))  # records sha256 too
    index = json.loads((store / "index.json").read_text())
    case_id = sorted(index["cases"])[1]
    path = store / "cases" / index["cases"][case_id]["arrays"][array]
    if cut is None:  # a whole .npy file of another shape in its place
        np.save(path, np.zeros((2, 2, 2), dtype=np.load(path).dtype))
    else:
        path.write_bytes(path.read_bytes()[:-cut])
    report = preprocess(compose_config("preprocess", _data(cache, store, f"hash={str(hash).lower()}")))
    assert report.processed == [case_id] and report.unchanged == 2
    assert [r["id"] for r in report.redone] == [case_id] and path.name in report.redone[0]["reason"]
    assert ("truncated" if cut else "[2, 2, 2]") in report.redone[0]["reason"]
    record = json.loads((store / "index.json").read_text())["cases"][case_id]
    for name in record["arrays"].values():
        np.load(store / "cases" / name)  # whole again
    again = preprocess(compose_config("preprocess", _data(cache, store, f"hash={str(hash).lower()}")))
    assert again.processed == [] and again.redone == []


def test_temporary_files_of_a_killed_run_are_skipped_and_cleaned(written, tmp_path):
    """A run killed between writing a record's temporary file and renaming it leaves
    ``.<id>.json.<random>.tmp.json`` (a complete record) and no ``<id>.json``: the rerun must not take
    the temporary for the record, and removes it."""
    cache, clean = written
    store = _copy(clean, tmp_path / "store")
    record_path = sorted((store / "cases").glob("*.json"))[0]
    case_id = json.loads(record_path.read_text())["id"]
    temporary = record_path.with_name(f".{record_path.name}.k1ll3d.tmp.json")
    record_path.rename(temporary)
    (store / "cases" / ".other.json.x.tmp.json").write_text('{"id": "half')  # a torn temporary as well
    report = preprocess(compose_config("preprocess", _data(cache, store)))
    assert report.processed == [case_id] and report.unchanged == 2
    assert record_path.is_file() and not list((store / "cases").glob(".*"))
    index = json.loads((store / "index.json").read_text())
    named = {n for r in index["cases"].values() for n in r["arrays"].values()}
    assert json.loads(record_path.read_text())["arrays"] == index["cases"][case_id]["arrays"]
    assert {p.name for p in (store / "cases").glob("*.npy")} == named


def test_a_full_disk_stops_preprocessing_naming_the_folder_and_keeps_the_store(written, tmp_path, monkeypatch, capsys):
    """numpy's short write ('125856 requested and 61312 written') on a nearly full disk: an error naming the
    store's folder and the free space (it used to skip every case and exit 0); the index stays the previous one."""
    from collections import namedtuple

    import asa.data.store_writer as writer
    import asa.io.atomic as atomic
    from asa.api import preprocess

    cache, store = written[0], _copy(written[1], tmp_path / "store")
    index = (store / "index.json").read_bytes()

    def short_write(fh, array, **kwargs):
        raise OSError("125856 requested and 61312 written")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(writer.np, "save", short_write)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda folder: usage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, compose_config("preprocess", _data(cache, store, "workers=0",
                                                                               "data.demo.size=40")))
    err = capsys.readouterr().err
    assert stop.value.code == 1 and f"no space left on {store / 'cases'}" in err and "1 MiB free" in err, err
    assert "skipped" not in err and (store / "index.json").read_bytes() == index
