"""asa-preprocess stopped by a signal counts the cases it kept on disk, once its pool's workers have finished
the cases they had taken (they finish them during the pool's shutdown), instead of the results it had read."""

from __future__ import annotations

import os
import signal

import pytest

from asa.api import preprocess
from asa.api.config import compose_config
from asa.cli.common import entry


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_preprocess_counts_the_cases_its_workers_finished(tmp_path, monkeypatch, capsys, sig):
    import asa.data.store_writer as P

    def pool_like(jobs, workers):  # a pool of two: the second case is under way when the signal comes
        try:
            yield P._job(jobs[0])
            os.kill(os.getpid(), sig)
            yield P._job(jobs[1])
        finally:  # the pool's shutdown waits for the case a worker had taken
            P._job(jobs[1])

    monkeypatch.setattr(P, "_run", pool_like)
    store = tmp_path / "store"
    cfg = compose_config("preprocess", ["data=demo", "data.demo.cases=3", "data.demo.size=32",
                                        f"data.demo.cache_dir={tmp_path / 'cache'}", f"data.store={store}",
                                        "progress=false", "workers=2"])
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, cfg)
    err = capsys.readouterr().err
    assert stop.value.code == 128 + sig and "Traceback" not in err
    records = [p for p in (store / "cases").glob("*.json") if not p.name.startswith(".")]
    assert len(records) == 2
    assert f"stopped by {signal.Signals(sig).name} (kept: 2 of 3 case(s) preprocessed in this run" in err
    assert "outside training" not in err
