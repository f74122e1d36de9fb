"""Options out of range are refused by name before any work (exit 2): asa-preprocess's workers and
data.store, the block puzzles' settings, the network settings where they are declared."""

from __future__ import annotations

from pathlib import Path

import pytest

from asa.api import preprocess
from asa.api.config import compose_config
from asa.cli.common import EXIT_REFUSED, entry


def _refused(app: str, job, overrides: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        entry(app, job, compose_config(app.removeprefix("asa-"), overrides))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    return err


def _store_options(tmp_path: Path, store: Path, *extra: str) -> list[str]:
    return ["data=demo", "data.demo.cases=2", "data.demo.size=32", f"data.demo.cache_dir={tmp_path / 'cache'}",
            f"data.store={store}", "progress=false", *extra]


def test_preprocess_refuses_negative_workers(tmp_path, capsys):
    err = _refused("asa-preprocess", preprocess, _store_options(tmp_path, tmp_path / "store", "workers=-1"), capsys)
    assert "workers=-1: expected 0 (one process per CPU core, at most 8) or a number of processes" in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "cache").exists()


def test_preprocess_refuses_a_file_as_the_store(tmp_path, capsys):
    (tmp_path / "store").write_text("a file")
    err = _refused("asa-preprocess", preprocess, _store_options(tmp_path, tmp_path / "store", "workers=1"), capsys)
    assert f"data.store={tmp_path / 'store'} is a file; expected the store folder to write" in err
    assert (tmp_path / "store").read_text() == "a file"


def _pretrain(tmp_path: Path, *extra: str) -> list[str]:
    return ["model=tiny", "trainer=smoke", "data.demo.cases=2", "data.demo.size=32",
            f"data.demo.cache_dir={tmp_path / 'cache'}", "device=cpu", "probe.every=0",
            f"output_dir={tmp_path / 'run'}", *extra]


def test_a_jigsaw_with_nothing_to_learn_is_refused(tmp_path, capsys):
    from asa.api import pretrain

    err = _refused("asa-pretrain", pretrain, _pretrain(tmp_path, "experiment=jigsaw", "data.crop=32", "method.grid=2",
                                                       "method.permutations=1"), capsys)
    assert "method.permutations=1: a jigsaw with fewer than 2 permutations has nothing to learn" in err
    assert not (tmp_path / "run").exists()
