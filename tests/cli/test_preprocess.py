"""asa-preprocess as a job: any data preset into a store, reruns, refusals with exit code 2, and
training from the store with the same data options."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asa.api import preprocess, pretrain
from asa.api.config import compose_config
from asa.cli.common import EXIT_REFUSED, entry
from asa.data import build_pretrain_dataset, build_segmentation_dataset, discover, get_task
from asa.data.store import open_store


def _data(kind: str, cache: Path, store: Path, *extra: str) -> list[str]:
    return [f"data={kind}", "data.demo.cases=3", "data.demo.size=32", f"data.demo.cache_dir={cache}",
            f"data.store={store}", "progress=false", "workers=1", *extra]


@pytest.mark.parametrize("preset, arrays", [("ibsr", {"image", "brain", "label", "fg"}), ("demo", {"image", "brain"})])
def test_any_preset_into_a_store_then_a_rerun_does_nothing(tmp_path, monkeypatch, preset, arrays):
    store = tmp_path / "store"
    report = preprocess(compose_config("preprocess", _data(preset, tmp_path / "cache", store)))
    assert report.cases == 3 and len(report.processed) == 3 and report.bytes > 0
    index = json.loads((store / "index.json").read_text())
    assert index["layout"] == ("ibsr" if preset == "ibsr" else "bids") and Path(index["root"]).is_dir()
    assert index["settings"]["kind"] == ("segmentation" if preset == "ibsr" else "pretrain")
    assert all(set(r["arrays"]) == arrays and r["checks"] == "full" for r in index["cases"].values())

    def no_reading(*args, **kwargs):
        raise AssertionError("a rerun read an unchanged volume again: the store's records hold its checks")

    monkeypatch.setattr("asa.data.layouts.base.load_volume", no_reading)
    again = preprocess(compose_config("preprocess", _data(preset, tmp_path / "cache", store)))
    assert again.processed == [] and again.unchanged == 3


def test_refusals(tmp_path, capsys):
    store = tmp_path / "store"
    preprocess(compose_config("preprocess", _data("demo", tmp_path / "cache", store)))
    cfg = compose_config("preprocess", _data("demo", tmp_path / "cache", store, "data.resample_mm=2"))
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, cfg)
    assert stop.value.code == EXIT_REFUSED and "resample_mm: store null, now 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="data.store is required"):
        preprocess(compose_config("preprocess", ["data.store=null"]))
    with pytest.raises(ValueError, match="data.stroe"):
        preprocess(compose_config("preprocess", _data("demo", tmp_path / "cache", store, "+data.stroe=x")))


@pytest.mark.slow
def test_pretraining_reads_the_store(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    preprocess(compose_config("preprocess", _data("demo", cache, store)))
    common = ["model=tiny", "trainer=smoke", "data.crop=32", "data.demo.cases=3", "data.demo.size=32",
              f"data.demo.cache_dir={cache}", "device=cpu", "probe.every=0", "data.split.ratios=[2,1,0]"]
    result = pretrain(compose_config("pretrain", [*common, f"output_dir={tmp_path / 'run'}", f"data.store={store}"]))
    assert result.step == 1 and (tmp_path / "run" / "checkpoints" / "encoder.pt").is_file()
    # the same run from the files: the same first-step loss (fp16 storage moves it a little)
    from_files = pretrain(compose_config("pretrain", [*common, f"output_dir={tmp_path / 'files'}"]))
    loss = [h for h in result.history if "val/loss" in h][0]["val/loss"]
    loss_files = [h for h in from_files.history if "val/loss" in h][0]["val/loss"]
    assert loss == pytest.approx(loss_files, rel=1e-3)
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.parametrize("preset", ["demo", "ibsr"])
def test_regions_auto_stores_no_maps_and_training_reads_the_store(tmp_path, preset):
    """data.regions.source=auto (training's default): nothing in asa-preprocess needs region maps, so
    the store holds none and records no region settings; a training run whose options need none
    (source=auto there too) accepts it."""
    store = tmp_path / "store"
    preprocess(compose_config("preprocess", _data(preset, tmp_path / "cache", store, "data.regions.source=auto")))
    index = json.loads((store / "index.json").read_text())
    assert all("region" not in r["arrays"] for r in index["cases"].values())
    assert "regions" not in index["settings"] and not list((store / "cases").glob("*region*"))
    cases = [c for c in discover("bids" if preset == "demo" else "ibsr", index["root"]) if c.id in index["cases"]]
    if preset == "demo":
        item = build_pretrain_dataset(cases, crop=32, augment=False, store=store)[0]
    else:
        item = build_segmentation_dataset(cases, get_task("ibsr"), train=True, crop=16, store=store)[0]
    assert "region" not in item and open_store(store).records
