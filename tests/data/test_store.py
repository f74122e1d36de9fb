"""The preprocessed store: what asa-preprocess writes, reruns, interruptions, refusals, and that training
reads from it the same crops as from the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import asa.data.store_writer as P
from asa.data import RegionSource, build_pretrain_dataset, build_segmentation_dataset, discover, get_task
from asa.data.synthetic.demo import write_demo_dataset
from asa.data.store_writer import build_store
from asa.data.lattice import reference_origin
from asa.data.preprocessing import PretrainPreprocess, SegmentationPreprocess, case_to_item
from asa.data.store import (StoreError, StoreSettingsError, _PaddedBackground, _PaddedForeground, open_store,
                            store_settings)

SIZE = 32


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    return write_demo_dataset("bids", tmp_path_factory.mktemp("bids"), cases=4, size=SIZE, seed=3)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    return write_demo_dataset("brats", tmp_path_factory.mktemp("brats"), cases=3, size=SIZE, seed=5)


def _pre(**kw):
    return PretrainPreprocess(SIZE, **kw)


def _write(cases, folder, pre=None, **kw):
    return build_store(cases, folder, preprocessor=pre or _pre(), channels=("t1",), progress=False, **kw)


def _index(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


def _consistent(folder: Path) -> None:
    """Every file the index names exists and maps; nothing else (no temporary file) is in cases/."""
    index = _index(folder)
    named = set()
    for case_id, record in index["cases"].items():
        named.add(f"{case_id}.json")
        for name in record["arrays"].values():
            named.add(name)
            np.load(folder / "cases" / name, mmap_mode="r")
    assert {p.name for p in (folder / "cases").iterdir()} >= named


def _rewrite(path: Path, scale: float) -> None:
    """Change a NIfTI file's contents (and so its size/mtime)."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32) * scale
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def test_store_holds_the_prepared_volume_in_its_box(bids, tmp_path):
    cases = discover("bids", bids)
    report = _write(cases, tmp_path / "s")
    assert report.cases == 4 and sorted(report.processed) == [c.id for c in cases] and report.unchanged == 0
    index = _index(tmp_path / "s")
    assert index["settings"] == store_settings(_pre().settings(), channels=("t1",), dtype="float16")
    assert "size" not in index["settings"]  # the crop is applied when reading
    for case in cases:
        record = index["cases"][case.id]
        full = _pre().prepare(case_to_item(case, ("t1",)))
        assert record["shape"] == [SIZE] * 3 and record["spacing"] == [1.0, 1.0, 1.0]
        assert record["centre"] == pytest.approx(full["centre"].tolist())
        st = case.images["t1"].stat()
        assert record["files"] == [{"path": str(case.images["t1"]), "size": st.st_size, "mtime_ns": st.st_mtime_ns}]
        (x0, y0, z0), (x1, y1, z1) = record["box"]
        image = np.load(tmp_path / "s" / "cases" / record["arrays"]["image"], mmap_mode="r")
        brain = np.load(tmp_path / "s" / "cases" / record["arrays"]["brain"], mmap_mode="r")
        assert image.dtype == np.float16 and brain.dtype == np.uint8 and image.shape == (1, x1 - x0, y1 - y0, z1 - z0)
        np.testing.assert_allclose(image, full["image"][:, x0:x1, y0:y1, z0:z1], rtol=1e-3, atol=1e-3)
        assert np.array_equal(brain, full["brain"][x0:x1, y0:y1, z0:z1])
        outside = full["image"].copy()
        outside[:, x0:x1, y0:y1, z0:z1] = 0
        assert not outside.any() and full["brain"].sum() == brain.sum()  # nothing is lost outside the box
    assert report.bytes == sum(p.stat().st_size for p in (tmp_path / "s" / "cases").glob("*.npy"))
    assert "4 case(s)" in report.summary()


def test_rerun_processes_only_a_changed_file(bids, tmp_path):
    root = tmp_path / "bids"
    write_demo_dataset("bids", root, cases=3, size=SIZE, seed=3)
    cases = discover("bids", root)
    store = tmp_path / "s"
    _write(cases, store)
    before = _index(store)
    again = _write(cases, store)
    assert again.processed == [] and again.unchanged == 3 and _index(store) == before
    _rewrite(cases[1].images["t1"], 2.0)
    third = _write(discover("bids", root), store)
    assert third.processed == [cases[1].id] and third.unchanged == 2
    after = _index(store)
    assert after["cases"][cases[0].id] == before["cases"][cases[0].id]
    assert after["cases"][cases[1].id]["arrays"] != before["cases"][cases[1].id]["arrays"]
    old = set(before["cases"][cases[1].id]["arrays"].values())
    assert not old & {p.name for p in (store / "cases").iterdir()}  # the replaced arrays are gone
    _consistent(store)
    # a case no longer found is dropped from the index and its files deleted
    fourth = _write(discover("bids", root)[:2], store)
    assert fourth.removed == [cases[2].id] and fourth.cases == 2
    assert not list((store / "cases").glob(f"{cases[2].id}*"))


def test_hash_mode_tells_a_touched_file_from_a_changed_one(tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=2, size=SIZE, seed=1)
    cases = discover("bids", root)
    store = tmp_path / "s"
    _write(cases, store, hash=True)
    assert all(len(f["sha256"]) == 64 for r in _index(store)["cases"].values() for f in r["files"])
    path = cases[0].images["t1"]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = _write(cases, store, hash=True)
    assert touched.touched == [cases[0].id] and touched.processed == []
    assert _index(store)["cases"][cases[0].id]["files"][0]["mtime_ns"] == st.st_mtime_ns + 10**9
    plain = _write(cases, store)  # without hash the mtime decides: the record already follows the file
    assert plain.processed == [] and plain.unchanged == 2
    _rewrite(path, 3.0)
    assert _write(cases, store, hash=True).processed == [cases[0].id]


def test_interrupted_run_leaves_a_consistent_store_and_resumes(tmp_path, monkeypatch):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=4, size=SIZE, seed=2)
    cases = discover("bids", root)
    store = tmp_path / "s"
    _write(cases, store)
    before = _index(store)
    for case in cases[1:]:
        _rewrite(case.images["t1"], 1.5)
    real_save, calls = np.save, []

    def save(fh, array, **kw):  # killed while writing the second array of the second case
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_save(fh, array, **kw)

    monkeypatch.setattr(P.np, "save", save)
    with pytest.raises(KeyboardInterrupt):
        _write(discover("bids", root), store)
    monkeypatch.setattr(P.np, "save", real_save)
    assert _index(store) == before  # the index is replaced only at the end of a run
    _consistent(store)
    assert not [p for p in (store / "cases").iterdir() if ".tmp" in p.name]  # the torn write was removed
    ds = build_pretrain_dataset(cases, crop=SIZE, augment=False, store=store)  # still readable (old contents)
    assert torch.isfinite(ds[1]["image"]).all()
    (store / "cases" / ".x.npy.abc.tmp.npy").write_bytes(b"left by a killed run")
    resumed = _write(discover("bids", root), store)
    assert resumed.processed == [c.id for c in cases[2:]]  # case 1 was complete before the interrupt
    assert resumed.unchanged == 2 and not (store / "cases" / ".x.npy.abc.tmp.npy").exists()
    _consistent(store)


def test_a_failing_case_is_skipped_and_the_rest_written_in_worker_processes(tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=3, size=SIZE, seed=4)
    cases = discover("bids", root)
    cases[1].images["t1"].write_bytes(cases[1].images["t1"].read_bytes()[:300])  # truncated after the checks
    report = _write(cases, tmp_path / "s", workers=2)
    assert sorted(report.processed) == [cases[0].id, cases[2].id]
    assert [(s["id"], s["stage"]) for s in report.skipped] == [(cases[1].id, "preprocess")]
    assert str(cases[1].images["t1"]) in report.skipped[0]["reason"]
    index = _index(tmp_path / "s")
    assert sorted(index["cases"]) == [cases[0].id, cases[2].id] and index["skipped"] == report.skipped
    _consistent(tmp_path / "s")


def test_other_settings_are_refused_naming_them(bids, tmp_path):
    cases = discover("bids", bids)[:1]
    _write(cases, tmp_path / "s")
    before = _index(tmp_path / "s")
    with pytest.raises(StoreSettingsError, match=r"resample_mm: store null, now 2.0.*dtype: store \"float16\", now \"float32\""):
        _write(cases, tmp_path / "s", pre=_pre(resample_mm=2.0), dtype="float32")
    assert _index(tmp_path / "s") == before
    with pytest.raises(StoreSettingsError, match=r"data.store=.*channels: store \[\"t1\"\], now \[\"t1\", \"t1\"\]"):
        build_pretrain_dataset(cases, crop=SIZE, channels=("t1", "t1"), store=tmp_path / "s")


def test_padded_indices_are_those_of_the_padded_mask():
    rng = np.random.default_rng(0)
    for density in (0.0, 0.02, 0.5, 1.0):
        mask = rng.random((5, 6, 7)) < density
        before, after = np.array([2, 0, 3]), np.array([1, 4, 0])
        padded = np.pad(mask, list(zip(before, after)))
        fg = _PaddedForeground(np.flatnonzero(mask), mask.shape, before, padded.shape)
        bg = _PaddedBackground(fg)
        assert [fg[k] for k in range(len(fg))] == np.flatnonzero(padded).tolist()
        assert len(bg) == (~padded).sum() and [bg[k] for k in range(len(bg))] == np.flatnonzero(~padded).tolist()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("size, augment", [(24, True), (40, True), (40, False)])  # inside the volume, beyond it
@pytest.mark.slow
def test_pretrain_crops_from_the_store_equal_the_files(bids, tmp_path, dtype, size, augment):
    from asa.train.data import move_to

    cases = discover("bids", bids)
    regions = RegionSource("cluster", k=3)
    build_store(cases, tmp_path / "s", preprocessor=_pre(regions=regions), channels=("t1",), dtype=dtype,
                progress=False)
    files = build_pretrain_dataset(cases, crop=size, augment=augment, regions=regions)
    stored = build_pretrain_dataset(cases, crop=size, augment=augment, regions=regions, store=tmp_path / "s")
    for i in range(len(cases)):
        for seed in (0, 1):
            files.reseed(seed), stored.reseed(seed)
            a, b = files[i], stored[i]
            assert a.keys() == b.keys() and a["id"] == b["id"] and a["image"].shape == (1, size, size, size)
            assert torch.equal(a["region"], b["region"]) and a["image"].dtype == torch.float32
            # with augmentation the image is float32 from the worker; without it, the store's precision
            # until it reaches the device
            assert b["image"].dtype == (torch.float32 if augment else getattr(torch, dtype))
            image = move_to(b["image"], torch.device("cpu"))
            assert image.dtype == torch.float32
            if dtype == "float32":
                assert torch.equal(a["image"], image)
            else:  # the storage precision: 11 significant bits
                torch.testing.assert_close(image, a["image"], rtol=2**-10, atol=2**-10)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.slow
def test_finetune_crops_from_the_store_equal_the_files(brats, tmp_path, dtype):
    task = get_task("brats")
    cases = discover("brats", brats)
    regions = RegionSource("label")
    build_store(cases, tmp_path / "s", preprocessor=SegmentationPreprocess(task, regions=regions),
                channels=task.channels, dtype=dtype, progress=False)
    kw = dict(crop=16, lattice=8, reference_size=24, samples_per_case=3, regions=regions)
    files = build_segmentation_dataset(cases, task, train=True, **kw)
    stored = build_segmentation_dataset(cases, task, train=True, store=tmp_path / "s", **kw)
    close = (lambda a, b: torch.equal(a, b)) if dtype == "float32" else (
        lambda a, b: torch.allclose(a, b, rtol=2**-9, atol=2**-9))
    for i in range(len(cases)):
        for seed in range(3):
            files.reseed(seed), stored.reseed(seed)
            for a, b in zip(files[i], stored[i], strict=True):
                assert a.keys() == b.keys() and torch.equal(a["offset"], b["offset"])
                assert torch.equal(a["label"], b["label"]) and torch.equal(a["region"], b["region"])
                assert a["image"].dtype == b["image"].dtype and close(a["image"], b["image"])
    whole_files = build_segmentation_dataset(cases, task, train=False)
    whole_stored = build_segmentation_dataset(cases, task, train=False, store=tmp_path / "s")
    a, b = whole_files[0], whole_stored[0]
    assert a.keys() == b.keys() and torch.equal(a["label"], b["label"]) and torch.equal(a["centre"], b["centre"])
    assert close(a["image"], b["image"])


@pytest.mark.parametrize("lattice", [1, 8])
def test_forced_crops_past_the_far_border_read_the_same_from_the_store(tmp_path, lattice):
    root = write_demo_dataset("msd", tmp_path / "msd", cases=1, size=SIZE, seed=0)
    cases, task = discover("msd", root), get_task("msd", root=root)
    label = np.zeros(nib.load(cases[0].label).shape, np.int16)
    label[-2:, -3:, -2:] = 1  # a blob in the far corner: a crop centred on it runs past the volume
    nib.save(nib.Nifti1Image(label, nib.load(cases[0].label).affine), cases[0].label)
    build_store(cases, tmp_path / "s", preprocessor=SegmentationPreprocess(task), channels=task.channels,
                dtype="float32", progress=False)
    crops, cases_as_read = [], []
    for store in (None, tmp_path / "s"):
        dataset = build_segmentation_dataset(cases, task, train=True, store=store, crop=16, lattice=lattice,
                                             samples_per_case=8, pos_fraction=1.0)
        preprocess, crop = dataset.transform.transforms[:2]  # the crops alone, without the augmentation
        cases_as_read.append(preprocess(dataset.items[0]))
        crop.set_random_state(0)
        crops.append(crop(cases_as_read[-1]))
    case = cases_as_read[0]
    ends = [reference_origin(case["centre"], (16,) * 3) + c["offset"].numpy() * lattice + 16 for c in crops[0]]
    assert any((end > np.asarray(case["image"].shape[1:])).any() for end in ends)  # some run past the far border
    for a, b in zip(*crops, strict=True):
        assert torch.equal(a["offset"], b["offset"]) and torch.equal(a["label"], b["label"])
        assert torch.equal(a["image"], b["image"])


def test_training_refuses_a_stale_or_foreign_store(tmp_path):
    from omegaconf import OmegaConf

    from asa.api.machinery.dataset import _cases_in_store

    root = write_demo_dataset("bids", tmp_path / "bids", cases=2, size=SIZE, seed=6)
    cases = discover("bids", root)
    store = tmp_path / "s"
    _write(cases, store, root=str(root), layout="bids")
    data = OmegaConf.create({"store": str(store), "on_bad_case": "error"})
    assert [c.id for c in _cases_in_store(data, root, "bids")[0]] == [c.id for c in cases]
    with pytest.raises(StoreError, match="written from data.root="):
        _cases_in_store(data, tmp_path, "bids")
    _rewrite(cases[0].images["t1"], 2.0)
    with pytest.raises(StoreError, match=rf"out of date: 1 case\(s\) changed .*{cases[0].id}.*Rerun asa-preprocess"):
        _cases_in_store(data, root, "bids")
    with pytest.raises(StoreError, match="no store index"):
        open_store(tmp_path / "nowhere")
