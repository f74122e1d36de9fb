"""The pretraining cohort travels with the encoder: the export carries each seen case's subject and image digests
(read back with ``weights_only=True``), and asa-finetune with ``model.pretrained`` says in one line how many of its
validation and test cases were in that cohort, refusing a test case (also a renamed copy, found by content) unless
``data.accept_pretraining_overlap``. Tiny demo phantoms (32³, 5 BraTS cases) and the tiny ASA preset."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import pytest
import torch
from omegaconf import OmegaConf

from asa.api import finetune
from asa.api.machinery.cohort import ACCEPT_OPTION, COHORT_FILE, OVERLAP_FILE, check_pretraining_overlap, evaluated_overlap_line
from asa.api.config import compose_config
from asa.api.export import export_model
from asa.api.machinery.run import OptionError
from asa.data import discover, write_demo_dataset
from asa.data.case import Case
from asa.data.cohort import carried_cohort, cohort_digest, cohort_record, cohort_summary, export_cohort
from asa.data.cohort_list import COHORT_FORMAT
from asa.data.digests import DIGEST, image_digests
from asa.io import save_checkpoint
from asa.models import ASA, PRESETS, load_weights, network_spec
from asa.train.pretrain import export_encoder


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    return write_demo_dataset("brats", tmp_path_factory.mktemp("data") / "brats", cases=5, size=32, seed=1)


def _cohort(entries: dict[str, tuple[str, dict[str, str]]]) -> dict:
    """A cohort record: case id -> (subject, {channel: digest}), all in the pretraining train part."""
    return {"format": COHORT_FORMAT, "digest": DIGEST, "seen_parts": ["train", "val"],
            "cases": {k: {"part": "train", "subject": s, "images": im} for k, (s, im) in entries.items()}}


def _encoder(folder: Path, cohort: dict | None) -> Path:
    """encoder.pt (and encoder.safetensors) of a tiny ASA network, as asa-pretrain's export writes it."""
    torch.manual_seed(0)
    mae = ASA(img_size=32, **PRESETS["tiny"])
    ckpt = save_checkpoint(folder / "checkpoints" / "last.pt", {"model": mae.state_dict(), "network": network_spec(mae),
                                                                "step": 3})
    return export_encoder(ckpt, folder / "checkpoints" / "encoder.pt", cohort=cohort)


def _finetune(root: Path, out: Path, pretrained: Path, *extra: str):
    return finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=tiny", "trainer=smoke", "trainer.max_steps=1", "trainer.panel_every=0",
        f"output_dir={out}", "device=cpu", "data.num_workers=0", f"model.pretrained={pretrained}", *extra]))


def test_export_carries_the_cohort_and_loads_weights_only(tmp_path, brats):
    cases = discover("brats", brats)
    digests = image_digests(cases, workers=1)
    cohort = export_cohort(_cohort({c.id: (c.id, digests[c.id]) for c in cases}))
    pt = _encoder(tmp_path / "pre", cohort)
    state = torch.load(pt, map_location="cpu", weights_only=True)
    # the file carries the summary; the list is cohort.json.gz beside it, read back by carried_cohort
    assert state["cohort"] == cohort_summary(cohort) and state["cohort"]["summary"]["cases"] == 5
    assert "cases" not in state["cohort"] and (pt.parent / "cohort.json.gz").is_file()
    assert carried_cohort(state, "encoder.pt", pt.parent) == cohort
    assert load_weights(pt.with_suffix(".safetensors"))["cohort"] == cohort_summary(cohort)  # the metadata, as JSON
    # asa-export of a checkpoint whose run recorded cohort.json: the model folder carries it and states its digest
    (tmp_path / "pre" / COHORT_FILE).write_text(json.dumps({**cohort, "run": "elsewhere"}))
    folder = export_model(tmp_path / "pre" / "checkpoints" / "last.pt", tmp_path / "model", cohort="full")
    assert carried_cohort(load_weights(folder), "folder", folder) == cohort
    config = json.loads((folder / "config.json").read_text())
    assert config["pretraining_cohort"]["cases"] == 5 and config["pretraining_cohort"]["images"] == 20
    assert config["pretraining_cohort"]["digest"] in (folder / "README.md").read_text()


def test_a_test_case_in_the_cohort_is_refused_also_as_a_renamed_copy(tmp_path, brats, capsys):
    cases = discover("brats", brats)
    digests = image_digests(cases, workers=1)
    # every case under another id and subject, with one image's content: the same scans renamed
    renamed = _cohort({f"sub-{k:02d}": (f"{k:02d}", {"T1w": digests[c.id]["t1"]}) for k, c in enumerate(cases)})
    pt = _encoder(tmp_path / "pre", renamed)
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=rf"test case\(s\).*were in the encoder's pretraining cohort.*{ACCEPT_OPTION}=true"):
        _finetune(brats, out, pt)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[asa] pretraining cohort:")]
    assert len(line) == 1 and "by id 0 / subject 0 / content" in line[0] and " = sub-" in line[0]
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()  # refused before training
    # accepted: the same check says its line and lets the split through
    splits = {"val": cases[:1], "test": cases[1:2]}
    report = check_pretraining_overlap(pt, splits, accept=True)
    assert report["subsets"]["test"]["overlapping"] == [cases[1].id]
    assert report["subsets"]["val"]["overlapping"] == [cases[0].id]
    assert "1 of the 1 validation cases and 1 of the 1 test cases" in capsys.readouterr().out


def test_a_disjoint_cohort_trains_and_says_so(tmp_path, brats, capsys):
    other = write_demo_dataset("brats", tmp_path / "other", cases=2, size=32, seed=7)
    elsewhere = discover("brats", other)
    digests = image_digests(elsewhere, workers=1)
    pt = _encoder(tmp_path / "pre", _cohort({f"x{c.id}": (f"x{c.id}", digests[c.id]) for c in elsewhere}))
    result = _finetune(brats, tmp_path / "run", pt)
    assert result.step == 1
    split = json.loads((tmp_path / "run" / "splits.json").read_text())
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[asa] pretraining cohort:")]
    assert line == [f"[asa] pretraining cohort: 0 of the {len(split['val'])} validation cases and 0 of the "
                    f"{len(split['test'])} test cases were in the encoder's pretraining cohort "
                    "(by id 0 / subject 0 / content 0 / near content not checked)"]
    # kept beside splits.json, where asa-evaluate of that split says it again without reading images
    recorded = json.loads((tmp_path / "run" / OVERLAP_FILE).read_text())
    assert recorded["pretrained"] == str(pt) and recorded["cohort"]["cases"] == 2
    assert evaluated_overlap_line(tmp_path / "run" / "splits.json", "test").startswith(
        f"0 of the {len(split['test'])} test cases were in the encoder's pretraining cohort (by id 0 / subject 0 / "
        f"content 0 / near content not checked) (asa-finetune's check of {pt}")


def test_a_file_without_a_cohort_says_it_was_not_checked(tmp_path, brats, capsys):
    pt = _encoder(tmp_path / "pre", None)
    assert "cohort" not in torch.load(pt, map_location="cpu", weights_only=True)
    assert check_pretraining_overlap(pt, {"val": [], "test": discover("brats", brats)[:1]}, accept=False) is None
    assert "carries no cohort digests" in capsys.readouterr().out


def test_probe_refuses_an_encoder_whose_cohort_holds_a_probed_case(tmp_path, capsys):
    from asa.api import probe

    aged = write_demo_dataset("bids", tmp_path / "bids", cases=4, size=32, seed=0, targets=True)
    cases = discover("bids", aged)
    digests = image_digests(cases[:1], workers=1)
    torch.manual_seed(0)
    mae = ASA(img_size=32, **PRESETS["tiny"])
    state = {"model": mae.state_dict(), "network": network_spec(mae), "step": 1,
             "cohort": export_cohort(_cohort({"renamed": ("someone", digests[cases[0].id])}))}
    ckpt = save_checkpoint(tmp_path / "a.pt", state)
    overrides = [f"encoders=[{ckpt},random]", "data=targets", f"data.root={aged}", "task=case", "task.target=age",
                 f"output={tmp_path / 'out'}", "device=cpu", "folds=2", "bootstrap=0"]
    with pytest.raises(OptionError, match=rf"1 of the 4 probed case\(s\) \({cases[0].id}\).*{ACCEPT_OPTION}=true"):
        probe(compose_config("probe", overrides))
    assert f"[asa] pretraining cohort of {ckpt}: 1 of the 4 probed cases were in the encoder's pretraining cohort " \
           f"(by id 0 / subject 0 / content 1 / near content not checked): {cases[0].id} = renamed" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def public_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A tiny pretraining run as asa-pretrain leaves it: checkpoints/last.pt (with its run config, data.root an
    absolute path) and cohort.json of four BIDS cases (subjects, digests and fingerprints), all in the train part."""
    base = tmp_path_factory.mktemp("public")
    root = write_demo_dataset("bids", base / "bids", cases=4, size=32, seed=0)
    cases = discover("bids", root)
    cohort = cohort_record(cases, {"train": [c.id for c in cases]}, workers=1,
                           source={"run": str(base / "pre"), "data": {"root": str(root)}})
    run = base / "pre"
    torch.manual_seed(0)
    mae = ASA(img_size=32, **PRESETS["tiny"])
    config = OmegaConf.to_container(compose_config("pretrain", ["data=bids", f"data.root={root}", "model=tiny"]))
    save_checkpoint(run / "checkpoints" / "last.pt", {"model": mae.state_dict(), "network": network_spec(mae),
                                                      "step": 3, "config": config})
    (run / COHORT_FILE).write_text(json.dumps(cohort))
    return run / "checkpoints" / "last.pt", root, cohort


def _bytes(path: Path) -> bytes:
    """A file's bytes, a gzipped one's uncompressed."""
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _names(cohort: dict) -> set[str]:
    """Every case id and subject id of a cohort record."""
    return set(cohort["cases"]) | {v["subject"] for v in cohort["cases"].values()}


def test_export_cohort_none_and_digests_write_no_participant_id(tmp_path, public_run, capsys):
    ckpt, root, cohort = public_run
    names = _names(cohort)
    assert len(names) >= 4 and all(len(n) >= 4 for n in names)  # ids long enough that a byte match means them
    full = export_model(ckpt, tmp_path / "full", cohort="full")
    assert all(n.encode() in _bytes(full / "cohort.json.gz") for n in names)  # what the grep would see
    summaries = {}
    for level in ("none", "digests"):
        folder = export_model(ckpt, tmp_path / level, cohort=level)
        for path in folder.iterdir():  # every file's bytes (the list's uncompressed): no case id, no subject id
            data = _bytes(path)
            assert not [n for n in names if n.encode() in data], (level, path.name)
        for name in ("README.md", "config.json"):  # no folder of this machine
            text = (folder / name).read_text()
            assert str(tmp_path.parent) not in text and str(root) not in text and str(Path.home()) + "/" not in text
        config = json.loads((folder / "config.json").read_text())
        summaries[level] = config["pretraining_cohort"]
        assert config["pretraining_cohort"]["carried"] == level
    assert "cohort" not in load_weights(tmp_path / "none")
    assert check_pretraining_overlap(tmp_path / "none", {"val": [], "test": []}, accept=False) is None
    assert "(it was exported with asa-export --cohort none: its config.json states only the cohort's digest " \
           f"{summaries['none']['digest']}; export with --cohort digests to check)" in capsys.readouterr().out
    assert summaries["none"]["digest"] == summaries["digests"]["digest"] == cohort_digest(cohort)["digest"]  # one cohort
    # digests: opaque keys, and an exact copy of a pretraining scan under another name is still found
    carried = carried_cohort(load_weights(tmp_path / "digests"), "digests", tmp_path / "digests")
    assert sorted(carried["cases"]) == [f"case-{k:04d}" for k in range(1, 5)] and carried["ids"] == "withheld"
    assert all(set(v) == {"part", "images", "fingerprints"} for v in carried["cases"].values())
    first, second = discover("bids", root)[:2]
    copy = Case(id="held-out-01", images=dict(first.images), meta={"subject": "someone-else"})
    # a rescaled, shifted copy of a 1 mm phantom: the phantoms are smaller than a brain, so they carry no near
    # fingerprint (asa.data.fingerprint.MIN_BOX_MM) and only the exact copy is found; near copies of brain-sized
    # scans are found through a digests-level record the same way (tests/data/test_fingerprint.py)
    image = nib.load(next(iter(second.images.values())))
    nib.save(nib.Nifti1Image(image.get_fdata() * 1.7 + 3.0, image.affine), tmp_path / "scaled.nii.gz")
    near = Case(id="held-out-02", images={"t1": tmp_path / "scaled.nii.gz"}, meta={"subject": "another"})
    with pytest.raises(OptionError, match=r"1 of the 2 test case\(s\) \(held-out-01\)"):
        check_pretraining_overlap(tmp_path / "digests", {"val": [], "test": [copy, near]}, accept=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[asa] pretraining cohort:")][-1]
    assert "(id and subject withheld / content 1 / near content 0): held-out-01 = case-0001" in line
    # re-exporting the public folder with --cohort full cannot bring the ids back
    again = export_model(tmp_path / "digests", tmp_path / "again", cohort="full")
    assert carried_cohort(load_weights(again), "again", again) == carried
    assert json.loads((again / "config.json").read_text())["pretraining_cohort"]["carried"] == "digests"


def test_export_refuses_an_unknown_cohort_level(tmp_path, public_run):
    with pytest.raises(OptionError, match=r"--cohort 'ids'.*full, digests, none"):
        export_model(public_run[0], tmp_path / "out", cohort="ids")
    assert not (tmp_path / "out").exists()


# --- the cohort in every format, and an accepted overlap said where the metrics are kept ----------------------------

def test_nnssl_and_nnunet_files_carry_the_cohort_as_chosen(tmp_path, public_run, capsys):
    """A resenc run's export: checkpoint_final.pth (nnssl) and nnunet_pretrained_weights.pth carry the cohort as
    --cohort leaves it (weights_only-readable; digests: no participant id in any file), and fine-tuning or probing
    from either file checks its cases against it, as from asa's own checkpoint."""
    from asa.api.machinery.cohort import check_probe_overlap
    from asa.models.cnn.resenc import resenc_unet

    ckpt, root, cohort = public_run
    run = tmp_path / "pre"
    torch.manual_seed(1)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    save_checkpoint(run / "checkpoints" / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 2})
    (run / COHORT_FILE).write_text(json.dumps(cohort))
    names = _names(cohort)
    for level in ("full", "digests", "none"):
        folder = export_model(run / "checkpoints" / "last.pt", tmp_path / level, cohort=level)
        for name in ("checkpoint_final.pth", "nnunet_pretrained_weights.pth"):
            blob = torch.load(folder / name, weights_only=True)
            assert blob.get("cohort") == load_weights(folder).get("cohort"), (level, name)  # None for none
            assert (load_weights(folder / name).get("cohort") is None) == (level == "none")
            if level == "digests":
                assert not [n for n in names if n.encode() in _bytes(folder / name)]
                assert not [n for n in names if n.encode() in _bytes(folder / "cohort.json.gz")]
    first = discover("bids", root)[0]
    copy = Case(id="held-out-01", images=dict(first.images), meta={"subject": "someone-else"})
    with pytest.raises(OptionError, match=r"1 of the 1 test case\(s\) \(held-out-01\)"):
        check_pretraining_overlap(tmp_path / "digests" / "checkpoint_final.pth", {"val": [], "test": [copy]},
                                  accept=False)
    assert "carries no cohort digests" not in capsys.readouterr().out
    entries = [str(tmp_path / "digests" / "nnunet_pretrained_weights.pth"), str(tmp_path / "none" / "checkpoint_final.pth")]
    reports = check_probe_overlap(entries, [copy], accept=True)
    assert reports[entries[0]]["probed"]["overlapping"] == ["held-out-01"] and entries[1] not in reports
    out = capsys.readouterr().out
    assert f"[asa] pretraining cohort of {entries[0]}: 1 of the 1 probed cases" in out
    assert f"[asa] pretraining cohort of {entries[1]}: the file carries no cohort digests" in out


def test_an_accepted_overlap_is_stated_in_summary_and_card(tmp_path, brats):
    """A run that accepted test cases of the cohort (data.accept_pretraining_overlap=true): asa-evaluate's
    summary.json and the exported card say how many of the test cases were in the cohort, and that it was accepted."""
    from asa.api import evaluate
    from asa.api.machinery.cohort import write_overlap

    cases = discover("brats", brats)
    digests = image_digests(cases[1:3], workers=1)
    run = tmp_path / "run"
    pt = _encoder(run, _cohort({f"s{c.id}": (f"s{c.id}", digests[c.id]) for c in cases[1:3]}))
    splits = {"train": [cases[4].id], "val": [cases[0].id], "test": [c.id for c in cases[1:4]]}
    (run / "splits.json").write_text(json.dumps(splits))
    by_id = {c.id: c for c in cases}
    report = check_pretraining_overlap(pt, {k: [by_id[i] for i in v] for k, v in splits.items()}, accept=True)
    assert report["accepted"] is True
    write_overlap(run, report)
    preds = tmp_path / "pred"
    preds.mkdir()
    for c in cases[1:4]:  # perfect predictions: the labels themselves
        (preds / f"{c.id}.nii.gz").write_bytes(c.label.read_bytes())
    summary = evaluate(compose_config("evaluate", ["data=brats", f"data.root={brats}", f"pred={preds}",
                                                   f"output={run / 'eval_test'}", f"split_file={run / 'splits.json'}",
                                                   "subset=test"]))
    said = "2 of 3 test cases were in the pretraining cohort, accepted (data.accept_pretraining_overlap=true)"
    written = json.loads((run / "eval_test" / "summary.json").read_text())
    assert written["pretraining_overlap"]["text"] == summary["pretraining_overlap"]["text"] == said
    assert written["pretraining_overlap"]["test"] == {"cases": 2, "of": 3} and "WT" in written  # the metrics kept
    card = (export_model(run / "checkpoints" / "last.pt", tmp_path / "model") / "README.md").read_text()
    assert f"**Not held out:** 0 of 1 validation cases were in the pretraining cohort; {said}" in card
    assert json.loads((tmp_path / "model" / "config.json").read_text())["metrics"]["eval_test"][
        "pretraining_overlap"]["accepted"] is True
