"""asa-predict never replaces or mixes predictions without a flag, records which checkpoint wrote each
one, refuses bad options before writing, and predicts only a split when asked. Tiny 16³ networks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asa.api import predict
from asa.api.config import compose_config
from asa.api.machinery.run import OptionError
from asa.api.machinery.rundir import RunDirError
from asa.data import get_task, write_demo_dataset
from asa.models import PRESETS, build_network, network_spec
from asa.io import save_checkpoint
from tests.fixtures.console import run_each
from tests.fixtures.runs import child_env


TINY = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


def _checkpoint(path: Path, task_name: str, seed: int) -> Path:
    task = get_task(task_name)
    torch.manual_seed(seed)
    net = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=16, in_channels=len(task.channels),
                                                      out_channels=task.num_outputs, **TINY)})
    return save_checkpoint(path, {"model": net.state_dict(), "network": network_spec(net),
                                  "config": {"task": dataclasses.asdict(task)}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    data = write_demo_dataset("brats", base / "brats", cases=3, size=16, seed=0)
    a = _checkpoint(base / "a.pt", "brats", 0)
    b = _checkpoint(base / "b.pt", "brats", 1)
    return base, data, a, b


def _cfg(ckpt: Path, data, out: Path, *extra: str):
    inputs = data if isinstance(data, str) else str(data)
    return compose_config("predict", [f"checkpoint={ckpt}", f"input={inputs}", f"output={out}", "device=cpu",
                                      "amp=off", *extra])


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_manifest_records_the_checkpoint_of_every_prediction(setup, tmp_path, capsys):
    base, data, a, _ = setup
    out = tmp_path / "preds"
    written = predict(_cfg(a, data, out))
    assert len(written) == 3
    manifest = json.loads((out / "predictions.json").read_text())
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    assert set(manifest["cases"]) == {p.name.removesuffix(".nii.gz") for p in written}
    for entry in manifest["cases"].values():
        assert entry["checkpoint"] == str(a) and entry["checkpoint_sha256"] == digest
    assert manifest["runs"][-1]["written"] == 3
    assert "wrote 3 prediction(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_folder_holding_predictions_is_refused_then_replaced_or_continued(setup, tmp_path):
    base, data, a, b = setup
    out = tmp_path / "preds"
    predict(_cfg(a, data, out))
    before = _snapshot(out)
    # another checkpoint into the same folder: refused, nothing changed
    with pytest.raises(RunDirError, match="already holds predictions") as err:
        predict(_cfg(b, data, out))
    assert str(out) in str(err.value) and "overwrite=true" in str(err.value) and "resume=true" in str(err.value)
    assert _snapshot(out) == before
    # resume with the other checkpoint: refused (it would mix two checkpoints' outputs)
    with pytest.raises(RunDirError, match="another checkpoint"):
        predict(_cfg(b, data, out, "resume=true"))
    # resume with the same checkpoint after losing one file: only that one is predicted again
    victim = sorted(out.glob("*.nii.gz"))[0]
    victim.unlink()
    written = predict(_cfg(a, data, out, "resume=true"))
    assert [p.name for p in written] == [victim.name]
    assert _snapshot(out).keys() == before.keys()
    # overwrite: the old folder is moved aside untouched, the new one holds only b's predictions
    written = predict(_cfg(b, data, out, "overwrite=true"))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("preds.replaced-")]
    assert len(aside) == 1 and len(list(aside[0].glob("*.nii.gz"))) == 3
    manifest = json.loads((out / "predictions.json").read_text())
    assert {e["checkpoint"] for e in manifest["cases"].values()} == {str(b)} and len(written) == 3


@pytest.mark.slow
def test_a_checkpoint_written_with_data_cache_dir_predicts_and_evaluates(setup, tmp_path):
    """A checkpoint of a run from before data.cache_dir was removed (its stored config holds the key)
    serves asa-predict and asa-evaluate's reliance diagnostic as any other: both rebuild the network
    from its spec and read only its task."""
    import nibabel as nib

    from asa.api import evaluate
    from asa.io import load_checkpoint

    _, data, a, _ = setup
    state = load_checkpoint(a)
    state["config"]["data"] = {"name": "brats", "crop": 16, "store": None, "cache_dir": "/somewhere"}
    old = save_checkpoint(tmp_path / "old.pt", state)
    written, same = predict(_cfg(old, data, tmp_path / "old")), predict(_cfg(a, data, tmp_path / "same"))
    assert [p.name for p in written] == [p.name for p in same] and len(written) == 3
    assert all((nib.load(p).get_fdata() == nib.load(q).get_fdata()).all() for p, q in zip(written, same))
    summary = evaluate(compose_config("evaluate", ["data=brats", f"data.root={data}", f"pred={tmp_path / 'old'}",
                                                   f"output={tmp_path / 'eval'}", f"reliance.checkpoint={old}",
                                                   "reliance.device=cpu"]))
    assert summary["n_cases"] == 3 and summary["reliance"]


def test_output_inside_the_input_folder_is_refused(setup, tmp_path):
    _, data, a, _ = setup
    before = sorted(p.name for p in data.rglob("*"))
    for out in (data, data / "preds"):
        with pytest.raises(RunDirError, match="inside the input"):
            predict(_cfg(a, data, out))
    assert sorted(p.name for p in data.rglob("*")) == before


def test_split_file_predicts_only_its_subset(setup, tmp_path, capsys):
    _, data, a, _ = setup
    ids = sorted(p.name for p in data.iterdir())
    split = tmp_path / "splits.json"
    split.write_text(json.dumps({"train": ids[:2], "val": [], "test": ids[2:]}))
    written = predict(_cfg(a, data, tmp_path / "out", f"split_file={split}", "subset=test"))
    assert [p.name for p in written] == [f"{ids[2]}.nii.gz"]
    with pytest.raises(OptionError, match="no subset 'nope'"):
        predict(_cfg(a, data, tmp_path / "out2", f"split_file={split}", "subset=nope"))
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("extra, match", [
    (["overlap=1.0"], r"overlap=1.0: expected a fraction"),
    (["overlap=-0.5"], r"overlap=-0.5: expected a fraction"),
    (["overwrite=true", "resume=true"], "pass one"),
])
def test_bad_options_are_refused_before_writing(setup, tmp_path, extra, match):
    _, data, a, _ = setup
    with pytest.raises(OptionError, match=match):
        predict(_cfg(a, data, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_windows_side_by_side_are_allowed(setup, tmp_path):
    """overlap=0 (the low end of the documented [0, 1)) predicts; it was turned into a negative overlap
    on the patch lattice, which MONAI refuses."""
    from asa.eval.inference import lattice_overlap

    assert lattice_overlap([64, 64, 64], 0.0, 8) == [0.0, 0.0, 0.0]
    _, data, a, _ = setup
    assert len(predict(_cfg(a, data, tmp_path / "out", "overlap=0"))) == 3


def test_empty_input_list_is_refused(setup, tmp_path):
    _, _, a, _ = setup
    cfg = compose_config("predict", [f"checkpoint={a}", "input=[]", f"output={tmp_path / 'out'}", "device=cpu"])
    with pytest.raises(OptionError, match=r"input=\[\]: no files given"):
        predict(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_one_channel_checkpoint_on_four_channels_says_which_it_reads(setup, tmp_path, capsys):
    base, data, _, _ = setup
    t1 = _checkpoint(base / "t1.pt", "ibsr", 0)  # IBSR: one channel, t1
    predict(_cfg(t1, data, tmp_path / "out"))
    err = capsys.readouterr().err
    assert "reads 1 channel(s): t1" in err and "t1ce, t2, flair" in err.replace("flair, t1ce, t2", "t1ce, t2, flair")


@pytest.mark.slow
def test_console_script_exit_codes_and_per_case_lines(setup, tmp_path):
    """Refused -> 2 with one line; a log file (no terminal) gets one line per case."""
    _, data, a, _ = setup
    args = [f"checkpoint={a}", f"input={data}", "device=cpu", "amp=off"]
    (code, stderr), (again, refused), (bad, overlap) = run_each(  # in turn, in one child process (one start-up)
        "asa.cli.predict", [[*args, f"output={tmp_path / 'p'}"], [*args, f"output={tmp_path / 'p'}"],
                            [*args, f"output={tmp_path / 'q'}", "overlap=-0.5"]], child_env())
    assert code == 0, stderr[-2000:]
    assert stderr.count("[asa] predicted ") == 3 and "predicted 3/3" in stderr
    assert again == 2 and "already holds predictions" in refused
    assert bad == 2 and overlap.strip().splitlines()[-1].startswith("[asa-predict] refused: overlap=-0.5")


@pytest.mark.slow
def test_a_resume_after_a_sigkill_keeps_every_complete_prediction(setup, tmp_path, monkeypatch, capsys):
    """Killed as the second case's label file took its name, with a torn temporary beside it (what a kill during
    an earlier asa's write left): resume=true predicts the third case alone and removes the temporary. Both states
    were refused as predictions that predictions.json does not record."""
    import os

    class Killed(BaseException):
        pass

    _, data, a, _ = setup
    out = tmp_path / "preds"
    ids = sorted(p.name for p in data.iterdir())
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if Path(dst) == out / f"{ids[1]}.nii.gz":
            raise Killed
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        predict(_cfg(a, data, out))
    monkeypatch.undo()
    torn = out / f".{ids[2]}.nii.gz.k3j9x_2a.tmp.nii.gz"
    torn.write_bytes((out / f"{ids[1]}.nii.gz").read_bytes()[:100])
    os.utime(torn, (0, 0))
    capsys.readouterr()
    written = predict(_cfg(a, data, out, "resume=true"))
    assert [p.name for p in written] == [f"{ids[2]}.nii.gz"] and not torn.exists()
    assert f"removed 1 temporary file(s) that an interrupted prediction write left in {out}" in capsys.readouterr().err
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ids


def _folder(kind: str, base: Path) -> tuple[Path, str]:
    """A folder of ``kind`` made by hand (no file is read beyond what names it) and the line asa-predict answers."""
    wanted = "asa-predict reads a fine-tuning checkpoint (asa-finetune's checkpoints/best.pt or last.pt)"
    if kind == "nnU-Net results fold":
        results = base / "Dataset501_x" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        (results / "fold_all").mkdir(parents=True)
        (results / "fold_all" / "checkpoint_final.pth").write_bytes(b"")
        (results / "plans.json").write_text(json.dumps({"dataset_name": "Dataset501_x"}))
        (results / "dataset.json").write_text("{}")
        return results / "fold_all", (
            f"checkpoint={results / 'fold_all'}: an nnU-Net v2 results folder (Dataset501_x, "
            "nnUNetTrainer__nnUNetPlans__3d_fullres, fold all), which nnU-Net's predictor runs, not asa-predict: "
            f"nnUNetv2_predict_from_modelfolder -i IMAGES -o PREDICTIONS -m {results} -f all")
    if kind in ("fine-tuning run", "pretraining run", "stopped pretraining run"):
        run = base / "run"
        (run / "checkpoints").mkdir(parents=True)
        for name in ("best.pt", "last.pt", *(["encoder.pt"] if kind == "pretraining run" else [])):
            (run / "checkpoints" / name).write_bytes(b"")
        (run / "config.yaml").write_text("task: {}\n" if kind == "fine-tuning run" else "method: {name: mae}\n")
        if kind == "stopped pretraining run":  # no encoder.pt, which a run exports when its training ends
            return run, (f"checkpoint={run}: an asa-pretrain run folder stopped before it exported encoder.pt: its "
                         f"encoder is fine-tuned by asa-finetune model.pretrained={run / 'checkpoints' / 'best.pt'} "
                         f"(asa-export {run / 'checkpoints' / 'best.pt'} OUT writes the encoder's own files), and "
                         f"{wanted}")
        return run, (f"checkpoint={run}: an asa-finetune run folder; asa-predict reads its checkpoint="
                     f"{run / 'checkpoints' / 'best.pt'} (the best validation round's weights; last.pt: the last "
                     "step's)" if kind == "fine-tuning run" else
                     f"checkpoint={run}: an asa-pretrain run folder: its encoder is fine-tuned by asa-finetune "
                     f"model.pretrained={run / 'checkpoints' / 'encoder.pt'}, and {wanted}")
    data = base / "bids"
    (data / "sub-01" / "ses-01" / "anat").mkdir(parents=True)
    (data / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_T1w.nii.gz").write_bytes(b"")
    return data, (f"checkpoint={data}: a data folder (it holds images: sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz), "
                  f"not a checkpoint; give it as input={data}; {wanted}")


@pytest.mark.parametrize("kind", ["nnU-Net results fold", "fine-tuning run", "pretraining run",
                                  "stopped pretraining run", "data folder"])
def test_a_folder_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path, capsys, kind):
    """Each was answered "no segmenter.pt: it carries a pretrained encoder only", true of none of them; refused
    (exit 2, one line) before anything is written."""
    from asa.cli.common import EXIT_REFUSED, entry

    folder, expected = _folder(kind, tmp_path)
    out = tmp_path / "pred"
    with pytest.raises(SystemExit) as stop:
        entry("asa-predict", predict, _cfg(folder, tmp_path / "images", out))
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-predict]")]
    assert stop.value.code == EXIT_REFUSED and len(said) == 1, said
    assert said[0].startswith(f"[asa-predict] refused: {expected}"), said[0]
    assert "pretrained encoder only" not in said[0] and not out.exists()


@pytest.mark.parametrize("beside", [False, True])
def test_a_pretraining_checkpoint_is_named_with_what_to_give_instead(tmp_path, capsys, beside):
    """A pretraining last.pt was answered "its task=None"; it is named for what it is, with the fine-tuning that
    starts from it (its run's encoder.pt where the run exported one), in one line before anything is written."""
    from asa.cli.common import EXIT_REFUSED, entry
    from tests.fixtures.runs import encoder_checkpoint

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    last = encoder_checkpoint(ckpts / "last.pt", seed=0)
    if beside:
        (ckpts / "encoder.pt").write_bytes(b"")
    out = tmp_path / "pred"
    with pytest.raises(SystemExit) as stop:
        entry("asa-predict", predict, _cfg(last, tmp_path / "images", out))
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-predict]")]
    assert stop.value.code == EXIT_REFUSED and len(said) == 1, said
    start = ckpts / "encoder.pt" if beside else last
    assert said[0] == (f"[asa-predict] refused: checkpoint={last}: a pretraining checkpoint (asa-pretrain's), which "
                       "predicts no labels; give a fine-tuned checkpoint (asa-finetune's checkpoints/best.pt or "
                       f"last.pt), or fine-tune this encoder first: asa-finetune data=... model.pretrained={start}")
    assert "None" not in said[0] and not out.exists()


def test_a_case_at_another_spacing_than_training_is_noted_in_one_line(setup, tmp_path, capsys):
    """A 1 mm model predicts a case stored at 1×1×3 mm on its own grid: said in one note naming the case and both
    spacings (the checkpoint's training_spacing), not refused; cases at the training spacing are not named."""
    import nibabel as nib

    from asa.io import load_checkpoint

    base, data, a, _ = setup
    state = load_checkpoint(a)
    state["config"]["training_spacing"] = {"median_mm": [1.0, 1.0, 1.0], "cases": 8}
    ckpt = save_checkpoint(tmp_path / "spaced.pt", state)
    images = tmp_path / "brats"
    ids = sorted(p.name for p in data.iterdir() if p.is_dir())
    for cid in ids[:2]:  # two of the cases, their channels copied as they are
        (images / cid).mkdir(parents=True)
        for f in (data / cid).glob("*.nii.gz"):
            nib.save(nib.load(f), images / cid / f.name)
    for f in (images / ids[1]).glob("*.nii.gz"):  # the second stored at 1×1×3 mm
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([1.0, 1.0, 3.0, 1.0])), f)
    predict(_cfg(ckpt, images, tmp_path / "preds"))
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "training spacing" in ln]
    assert notes == [f"[asa] note: 1 of 2 case(s) have voxels other than the checkpoint's training spacing 1×1×1 mm "
                     f"(the median of its training cases): {ids[1]} 1×1×3 mm; each is predicted on its own grid, not "
                     "resampled, so the network sees it at another scale than it learned; resample them to 1×1×1 mm "
                     "for predictions as trained"]
    assert len(list((tmp_path / "preds").glob("*.nii.gz"))) == 2


def test_spacing_note_reads_the_headers_in_ras_order(tmp_path):
    """The note compares RAS axes: a 3 mm axis stored first in an LPS-like file is the training spacing's x."""
    import nibabel as nib

    from asa.api.tasks.segmentation import spacing_note
    from asa.data.case import Case

    def case(cid: str, affine) -> Case:
        path = tmp_path / f"{cid}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.asarray(affine, float)), path)
        return Case(id=cid, images={"t1": path})

    stored_zyx = [[0, 0, 1.0, 0], [0, 1.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]]  # stored axis 0 runs along S, 3 mm
    cases = [case("a", np.eye(4)), case("b", stored_zyx)]
    assert spacing_note(cases, {"median_mm": [1.0, 1.0, 3.0]}).startswith(
        "1 of 2 case(s) have voxels other than the checkpoint's training spacing 1×1×3 mm (the median of its training "
        "cases): a 1×1×1 mm;")
    assert spacing_note(cases[1:], {"median_mm": [1.1, 0.9, 3.3]}) is None  # within a fifth along every axis
    assert spacing_note(cases, None) is None  # a checkpoint that records none
