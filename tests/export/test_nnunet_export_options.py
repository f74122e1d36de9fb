"""asa-export --format nnunet-results as a pipeline uses it: the plans' spacing is the one asa-finetune recorded of its
training cases (nnU-Net's planned median), so the export needs no data; a checkpoint without that record takes
``--spacing`` or is refused; ``--dataset-id`` / ``--dataset-name`` let two models share one ``$nnUNet_results``;
tensors the network shares are saved once; and the write check looks where the files are really written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from asa.api import finetune  # noqa: E402
from asa.api.config import compose_config  # noqa: E402
from asa.api.export import export_model  # noqa: E402
from asa.api.machinery.dataset import TRAINING_SPACING, planned_spacing  # noqa: E402
from asa.formats.nnunet import _metrics_lines  # noqa: E402
from asa.cli.common import EXIT_FINISHED, EXIT_REFUSED  # noqa: E402
from asa.cli.export import main as export_main  # noqa: E402
from asa.data import write_demo_dataset  # noqa: E402
from asa.data.case import Case  # noqa: E402
from asa.io import load_checkpoint, save_checkpoint  # noqa: E402

EDGE = 32
# the demo cases' voxel edges (mm) along the files' own axes; the second is stored PIR (axes permuted, flipped)
EDGES = {"BRATS_DEMO_001": (1.2, 1.2, 1.2), "BRATS_DEMO_002": (0.8, 1.0, 1.4), "BRATS_DEMO_003": (1.1, 1.1, 1.6),
         "BRATS_DEMO_004": (0.9, 0.9, 0.9)}
PIR = "BRATS_DEMO_002"  # stored axes: 0 posterior, 1 inferior, 2 right (RAS axes 1, 2, 0)


def _affine(case: str) -> np.ndarray:
    sx, sy, sz = EDGES[case]
    if case != PIR:
        return np.diag([sx, sy, sz, 1.0])
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = -sx, -sy, sz, 1.0  # stored i -> -A, j -> -S, k -> +R
    return affine


def _ras_edges(case: str) -> tuple[float, float, float]:
    sx, sy, sz = EDGES[case]
    return (sz, sx, sy) if case == PIR else (sx, sy, sz)  # along R, A, S


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResEnc fine-tuned for one step on demo MSD cases of the voxel sizes above; its data then deleted."""
    base = tmp_path_factory.mktemp("nnunet-options")
    root = write_demo_dataset("msd", base / "data", cases=4, size=EDGE, seed=5)
    for path in sorted(root.glob("*/*.nii.gz")):
        case = path.name.removesuffix(".nii.gz")[:14]
        image = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), _affine(case)), str(path))
    run = base / "run"
    finetune(compose_config("finetune", [
        "data=msd", f"data.root={root}", "model=resenc", "model.size=tiny", f"data.crop={EDGE}", "trainer=smoke",
        "trainer.max_steps=1", f"output_dir={run}", "device=cpu", "data.num_workers=0", "trainer.amp=off"]))
    train = json.loads((run / "splits.json").read_text())["train"]
    shutil.rmtree(root)  # the export must not need the data
    return run / "checkpoints" / "last.pt", train, base


def test_planned_spacing_is_nnunets_median_in_ras_order(tmp_path):
    cases = []
    for case in EDGES:
        path = tmp_path / f"{case}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), _affine(case)), str(path))
        cases.append(Case(id=case, images={"t1": path}))
    spacing = planned_spacing(cases)
    assert spacing["cases"] == 4
    # along R: 1.2, 1.4, 1.1, 0.9 -> 1.15; A: 1.2, 0.8, 1.1, 0.9 -> 1.0; S: 1.2, 1.0, 1.6, 0.9 -> 1.1
    assert spacing["median_mm"] == pytest.approx([1.15, 1.0, 1.1])
    # thick slices (nnU-Net's anisotropy rule): 5 mm along S with a third of the voxels -> the 10th percentile there
    thick = []
    for i, s in enumerate((4.0, 5.0, 5.0, 6.0)):
        path = tmp_path / f"thick{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((60, 60, 12), np.float32), np.diag([1.0, 1.0, s, 1.0])), str(path))
        thick.append(Case(id=f"thick{i}", images={"t1": path}))
    assert planned_spacing(thick)["median_mm"] == pytest.approx([1.0, 1.0, float(np.percentile([4, 5, 5, 6], 10))])
    assert planned_spacing([Case(id="gone", images={"t1": tmp_path / "missing.nii.gz"})]) is None


@pytest.mark.slow  # the module's fine-tuned network
def test_export_states_the_recorded_median_without_the_data(trained, tmp_path):
    last, train, _ = trained
    recorded = load_checkpoint(last)["config"][TRAINING_SPACING]
    expected = np.median([_ras_edges(case) for case in train], axis=0)
    assert recorded["cases"] == len(train) and recorded["median_mm"] == pytest.approx(expected.tolist())
    folder = export_model(last, tmp_path / "results", format="nnunet-results")
    plans = json.loads((folder / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == pytest.approx(expected.tolist())
    assert plans["dataset_name"] == "Dataset975_asa_msd"
    assert f"median voxel size of its {len(train)} training cases" in (folder / "README.md").read_text()
    # trained on each scan's own grid (no data.resample_mm): nnU-Net predicts each scan on its own grid too
    conf = plans["configurations"]["3d_fullres"]
    assert {conf[f"resampling_fn_{k}"] for k in ("data", "seg", "probabilities")} == {"no_resampling_hack"}
    assert "on its own grid (no_resampling_hack)" in (folder / "README.md").read_text()


def test_plans_resample_only_what_asa_resampled():
    from asa.formats.nnunet import resampling

    assert resampling(native=True, data=3, seg=1) == {
        "resampling_fn_data": "no_resampling_hack", "resampling_fn_data_kwargs": {},
        "resampling_fn_seg": "no_resampling_hack", "resampling_fn_seg_kwargs": {}}
    resampled = resampling(native=False, data=3, seg=1)
    assert resampled["resampling_fn_seg"] == "resample_data_or_seg_to_shape"
    assert resampled["resampling_fn_data_kwargs"] == {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    assert resampled["resampling_fn_seg_kwargs"]["is_seg"] and resampled["resampling_fn_seg_kwargs"]["order"] == 1


@pytest.mark.slow  # the module's fine-tuned network
def test_shared_tensors_are_saved_once(trained, tmp_path):
    last, _, _ = trained
    folder = export_model(last, tmp_path / "results", format="nnunet-results")
    path = folder / "fold_all" / "checkpoint_final.pth"
    weights = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    aliases = [k for k in weights if ".all_modules.0." in k]
    assert aliases, "no aliased convolution: nothing is checked"
    for key in aliases:  # nnU-Net's ConvDropoutNormReLU registers its convolution as conv and all_modules.0
        assert weights[key].data_ptr() == weights[key.replace(".all_modules.0.", ".conv.")].data_ptr(), key
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in weights.values()}
    weight_bytes = sum(storages.values())
    assert len(storages) < len(weights)
    assert path.stat().st_size < 1.2 * weight_bytes + 200_000, (path.stat().st_size, weight_bytes)


@pytest.mark.slow  # the module's fine-tuned network
def test_an_old_checkpoint_takes_spacing_or_is_refused(trained, tmp_path, capsys):
    last, _, _ = trained
    state = load_checkpoint(last)
    del state["config"][TRAINING_SPACING]  # as asa-finetune wrote it before the record
    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    save_checkpoint(old, state)
    assert export_main([str(old), str(tmp_path / "refused"), "--format", "nnunet-results"]) == EXIT_REFUSED
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-export]")]
    assert len(lines) == 1 and "records no spacing of its training data" in lines[0] and "--spacing" in lines[0]
    assert not (tmp_path / "refused").exists()
    assert export_main([str(old), str(tmp_path / "given"), "--format", "nnunet-results", "--spacing", "1.5"]) == \
        EXIT_FINISHED
    plans = json.loads((tmp_path / "given" / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.5, 1.5, 1.5]
    assert "from --spacing" in (tmp_path / "given" / "README.md").read_text()


def _case(folder: Path, channels: int) -> None:
    """One case in nnU-Net's naming: a ball of random intensities, 1 mm voxels."""
    folder.mkdir()
    gen = np.random.default_rng(0)
    grid = np.indices((EDGE,) * 3) - (EDGE - 1) / 2
    ball = np.sqrt((grid ** 2).sum(0)) <= EDGE / 2 - 2
    for c in range(channels):
        image = np.where(ball, gen.uniform(50, 150, size=ball.shape), 0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"ball_{c:04d}.nii.gz"))


@pytest.mark.slow  # the module's fine-tuned network
def test_two_dataset_ids_predict_from_one_results_folder(trained, tmp_path, monkeypatch, nnunet_predict):
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    last, _, _ = trained
    results = tmp_path / "nnUNet_results"
    for dataset_id, name in ((501, "lesions_a"), (502, None)):
        options = ["--dataset-id", str(dataset_id)] + (["--dataset-name", name] if name else [])
        assert export_main([str(last), str(tmp_path / f"export{dataset_id}"), "--format", "nnunet-results",
                            *options]) == EXIT_FINISHED
        plans = json.loads((tmp_path / f"export{dataset_id}" / "plans.json").read_text())
        assert plans["dataset_name"] == f"Dataset{dataset_id}_{name or 'asa_msd'}"
        place = results / plans["dataset_name"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        place.parent.mkdir(parents=True)
        (tmp_path / f"export{dataset_id}").rename(place)
    monkeypatch.setenv("nnUNet_results", str(results))  # as nnUNetv2_predict -d ID finds a model
    images = tmp_path / "images"
    _case(images, 4)
    labels = {}
    for dataset_id in (501, 502):
        folder = Path(get_output_folder(dataset_id, "nnUNetTrainer", "nnUNetPlans", "3d_fullres"))
        assert folder.parent.name.startswith(f"Dataset{dataset_id}_") and folder.is_dir()
        out = tmp_path / f"pred{dataset_id}"
        nnunet_predict(folder, images, out)
        labels[dataset_id] = np.asarray(nib.load(str(out / "ball.nii.gz")).dataobj)
    assert np.array_equal(labels[501], labels[502])  # one network under two ids


@pytest.mark.slow  # the module's fine-tuned network
def test_bad_dataset_options_are_refused(trained, tmp_path, capsys):
    last, _, _ = trained
    for options, said in ((["--format", "nnunet-results", "--dataset-id", "1000"], "--dataset-id 1000"),
                          (["--format", "nnunet-results", "--dataset-name", "my model"], "--dataset-name 'my model'"),
                          (["--spacing", "1"], "--spacing: options of --format nnunet-results"),
                          (["--format", "nnunet-results", "--spacing", "1", "0"],
                           "--spacing 1 0: expected one or three")):
        assert export_main([str(last), str(tmp_path / "out"), *options]) == EXIT_REFUSED, options
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-export]")]
        assert len(lines) == 1 and said in lines[0], (options, lines)
        assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the module's fine-tuned network
def test_a_foreign_folder_is_refused_naming_the_formats_files(trained, tmp_path, capsys):
    last, _, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export_main([str(last), str(out), "--format", "nnunet-results"]) == EXIT_REFUSED
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-export]")][0]
    assert "notes.txt" in line and "dataset.json" in line and "fold_all" in line
    assert "model.safetensors" not in line and "config.json" not in line


@pytest.mark.slow  # the module's fine-tuned network
@pytest.mark.parametrize("format", ["nnunet-results", "hub"])
def test_a_writable_folder_in_a_read_only_parent_is_refused_before_any_work(trained, tmp_path, monkeypatch, capsys,
                                                                            format):
    """The files are written beside OUT and then renamed into it, so OUT's parent must be writable too. As root
    chmod does not stop writes: creating anything directly in ``parent`` is refused as a read-only file system."""
    last, _, _ = trained
    parent = tmp_path / "parent"
    out = parent / "out"
    out.mkdir(parents=True)

    def refuse_in_parent(where) -> None:
        if where is not None and Path(where).absolute() == parent:
            raise OSError(errno.EROFS, "Read-only file system", str(where))

    real_mkstemp, real_mkdtemp, real_mkdir = tempfile.mkstemp, tempfile.mkdtemp, os.mkdir

    def mkstemp(*args, dir=None, **kwargs):
        refuse_in_parent(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdtemp(*args, dir=None, **kwargs):
        refuse_in_parent(dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse_in_parent(Path(path).absolute().parent)
        return real_mkdir(path, *args, **kwargs)

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the write check")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr("asa.api.export.load_weights", no_work)
    assert export_main([str(last), str(out), "--format", format]) == EXIT_REFUSED
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa-export]")]
    assert len(lines) == 1 and f"its folder {parent} cannot be written (read-only file system)" in lines[0], lines
    assert list(out.iterdir()) == [] and sorted(p.name for p in parent.iterdir()) == ["out"]


def test_the_results_card_titles_validation_apart_from_asa_evaluate():
    lines = "\n".join(_metrics_lines({"validation": {"step": 40, "val/dice": 0.7},
                                      "eval_test": {"task": "msd", "n_cases": 3, "mean": {"lesion": {"Dice": 0.6}}}}))
    validation = lines[lines.index("### Validation"):lines.index("### asa-evaluate")]
    assert "asa-finetune" in validation and "asa-evaluate" not in validation and '"val/dice": 0.7' in validation
    assert "### asa-evaluate: `eval_test/summary.json`" in lines
    assert _metrics_lines({}) == []
