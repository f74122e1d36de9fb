"""The pretraining cohort at OpenMind's size (10^5 cases): every weight file carries its summary, a few hundred bytes
whatever the cohort's size, and the list lives beside it as ``cohort.json.gz``; asa-pretrain's export, asa-finetune's
check, the export of the fine-tuned network in every ``asa-export --format`` and a second check from that folder all
go through the list. Before, each case put ~5.7 KB into every weight file's header and safetensors refused the write
above ~17,700 cases. The record is synthetic (fake digests, no fingerprints) but for the demo cases' own digests, planted
among the 10^5, so that the checks have something to find."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
import torch

from asa.api import finetune
from asa.api.config import compose_config
from asa.api.export import export_model
from asa.formats import choices
from asa.api.machinery.cohort import ENCODER_COHORT_FILE, check_pretraining_overlap
from asa.api.machinery.run import OptionError
from asa.cli.export import main as export_main
from asa.data import discover, write_demo_dataset
from asa.data.case import Case
from asa.data.cohort import CohortListMissing, carried_cohort, cohort_digest, cohort_summary, export_cohort
from asa.data.cohort_list import COHORT_FORMAT
from asa.data.digests import DIGEST, image_digests
from asa.io import load_checkpoint, save_checkpoint
from asa.models import load_weights, network_spec
from asa.train.pretrain import export_encoder

N = 10**5
PLANTED = 77_777  # the first planted case's index: the demo cases' digests sit there among the fake ones
HEADER_BOUND = 4096  # bytes a cohort may add to a weight file, at any size (its summary is ~600)


def _header(path: Path) -> int:
    """The length of a safetensors file's JSON header (its first 8 bytes, little-endian)."""
    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    """(demo BraTS root, encoder.pt carrying a 10^5-case cohort, its record, encoder.pt of the same weights carrying
    none, the fine-tuning run from it)."""
    base = tmp_path_factory.mktemp("scale")
    root = write_demo_dataset("brats", base / "brats", cases=4, size=32, seed=5)
    cases = discover("brats", root)
    planted = image_digests(cases, workers=1)
    fake = {f"sub-{n:06d}": {"part": "train" if n % 10 else "val", "subject": f"{n:06d}",
                             "images": {"t1": f"sha256:{n:064x}"}} for n in range(N)}
    for k, case in enumerate(cases):  # a scan of every demo case, renamed, in the pretraining cohort
        fake[f"sub-{PLANTED + k:06d}"]["images"] = {"t1": planted[case.id]["t1"]}
    record = export_cohort({"format": COHORT_FORMAT, "digest": DIGEST, "seen_parts": ["train", "val"], "cases": fake})
    from asa.models.cnn.resenc import resenc_unet

    torch.manual_seed(0)
    net = resenc_unet(img_size=32, in_channels=4, out_channels=3, size="tiny")
    ckpt = save_checkpoint(base / "pre" / "checkpoints" / "last.pt",
                           {"model": net.state_dict(), "network": network_spec(net), "step": 3})
    encoder = export_encoder(ckpt, base / "pre" / "checkpoints" / "encoder.pt", cohort=record)
    bare = export_encoder(ckpt, base / "bare" / "encoder.pt")
    run = base / "run"
    finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=resenc", "model.size=tiny", "data.crop=32", "trainer=smoke",
        "trainer.max_steps=1", "trainer.epochs=1", "trainer.amp=off", "trainer.panel_every=0", f"output_dir={run}",
        "device=cpu", "data.num_workers=0", f"model.pretrained={encoder}", "data.accept_pretraining_overlap=true"]))
    return root, encoder, record, bare, run


def test_pretraining_export_carries_a_bounded_summary_and_the_list_beside_it(scale):
    _, encoder, record, bare, _ = scale
    for suffix in (".safetensors", ".pt"):
        with_cohort, without = encoder.with_suffix(suffix), bare.with_suffix(suffix)
        assert 0 < with_cohort.stat().st_size - without.stat().st_size < HEADER_BOUND, suffix
    assert _header(encoder.with_suffix(".safetensors")) - _header(bare.with_suffix(".safetensors")) < HEADER_BOUND
    state = load_weights(encoder.with_suffix(".safetensors"))
    assert state["cohort"] == cohort_summary(record) and state["cohort"]["summary"]["cases"] == N
    listed = carried_cohort(state, "encoder.safetensors", encoder.parent)
    assert len(listed["cases"]) == N and cohort_digest(listed) == cohort_digest(record)
    # the list is ~100 bytes a case here (no fingerprints); gzipped JSON anyone can read
    assert len(json.loads(gzip.decompress((encoder.parent / "cohort.json.gz").read_bytes()))["cases"]) == N


def test_finetuning_checks_its_split_against_the_list_and_keeps_it(scale, capsys):
    root, encoder, record, _, run = scale
    overlap = json.loads((run / "pretraining_overlap.json").read_text())
    assert overlap["cohort"]["cases"] == N and overlap["accepted"] is True
    found = {c for part in overlap["subsets"].values() for c in part["overlapping"]}
    split = json.loads((run / "splits.json").read_text())
    assert found == set(split["val"]) | set(split["test"])  # every held-out demo case, by content among 10^5
    kept = json.loads(gzip.decompress((run / ENCODER_COHORT_FILE).read_bytes()))
    assert len(kept["cases"]) == N and cohort_digest(kept) == cohort_digest(record)


@pytest.mark.slow  # every export format end to end
@pytest.mark.parametrize("format", choices())
def test_every_export_format_of_the_finetuned_network_carries_the_cohort(scale, tmp_path, format):
    pytest.importorskip("onnxruntime" if format == "onnx" else "nnunetv2" if format == "nnunet-results" else "torch")
    root, encoder, record, _, run = scale
    folder = export_model(run / "checkpoints" / "last.pt", tmp_path / format, format=format, license="apache-2.0")
    digest = cohort_digest(record)
    if format == "nnunet-results":  # nnU-Net's folder: the summary in its provenance (dataset.json, the checkpoint)
        stated = json.loads((folder / "dataset.json").read_text())["asa"]["pretraining_cohort"]
        assert {k: stated[k] for k in digest} == digest
        assert load_checkpoint(folder / "fold_all" / "checkpoint_final.pth")["asa"]["pretraining_cohort"] == stated
        assert (folder / "dataset.json").stat().st_size < 8192
        return
    assert json.loads((folder / "config.json").read_text())["pretraining_cohort"]["digest"] == digest["digest"]
    assert _header(folder / "model.safetensors") < HEADER_BOUND + 4096 * 4  # tensor names and the network spec
    for name in ("model.safetensors", "checkpoint_final.pth", "nnunet_pretrained_weights.pth"):
        state = load_weights(folder / name)
        assert state["cohort"]["summary"] == digest, name
        assert len(carried_cohort(state, name, folder)["cases"]) == N
    # a second fine-tuning from the exported folder finds a demo case's scan among the 10^5
    case = discover("brats", root)[0]
    copy = Case(id="held-out", images=dict(case.images), meta={"subject": "someone"})
    with pytest.raises(OptionError, match=r"1 of the 1 test case\(s\) \(held-out\)"):
        check_pretraining_overlap(folder, {"val": [], "test": [copy]}, accept=False)


def test_a_missing_list_is_said_and_a_cohort_less_folder_is_refused_by_cohort_full(scale, tmp_path, capsys):
    _, encoder, record, _, _ = scale
    folder = export_model(encoder, tmp_path / "model")
    (folder / "cohort.json.gz").unlink()
    with pytest.raises(CohortListMissing, match=r"states a pretraining cohort of 100000 cases .* whose list "
                                                r"cohort.json.gz is not beside it"):
        carried_cohort(load_weights(folder), "model", folder)
    assert check_pretraining_overlap(folder, {"val": [], "test": []}, accept=False) is None
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[asa] pretraining cohort: model.pretrained={folder} states a pretraining cohort of "
                           "100000 cases") and line.endswith("the validation and test cases were not checked against it")
    assert "\n" not in line
    # without its list the folder re-exports only with --cohort none; with --cohort full it is refused, one line
    assert export_main([str(folder), str(tmp_path / "again"), "--cohort", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not beside it" in err and "--cohort none" in err
    assert export_main([str(folder), str(tmp_path / "none"), "--cohort", "none"]) == 0
    capsys.readouterr()
    assert export_main([str(tmp_path / "none"), str(tmp_path / "full"), "--cohort", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("[asa-export] refused: --cohort full:") and "carries no pretraining cohort" in err
    assert "exported with --cohort none" in err and "\n" not in err
    assert not (tmp_path / "again").exists() and not (tmp_path / "full").exists()
    assert export_main([str(tmp_path / "none"), str(tmp_path / "plain")]) == 0  # the default: what the source carries
