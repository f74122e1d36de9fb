"""asa-export --format nnunet-results: nnU-Net v2's own predictor (``nnUNetPredictor``, as
``nnUNetv2_predict_from_modelfolder`` runs it) builds the network from the exported plans, loads the weights and
predicts what asa-predict predicts, for a region task (BraTS) and a class task (MSD).

The cases are made so that nnU-Net's reading and asa's give the same input: a ball touching every face of a 32³
grid (nnU-Net's crop to the nonzero region keeps the whole grid, so both run the one window at the same place) with
intensities of four levels (asa's clip to the brain's 0.5-99.5 percentiles changes nothing), one case stored in RAS
and one in LAS (both readers reorient). What remains inside the brain is float rounding (nnU-Net sums its windows
in fp16), so Dice per output there must be ≥ 0.99. Outside it, in the window's corners, nnU-Net's Gaussian weights
underflow in fp16 (a 32³ window's weights beyond about 20 voxels from its centre become the smallest nonzero one) and
its probabilities there are not the network's: the comparison leaves those voxels out. On scans the two differ as the
card says: the window grid (nnU-Net tiles the nonzero crop), the clip, and nnU-Net's mirroring unless disabled."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nnunetv2")

from asa.api import finetune, predict  # noqa: E402
from asa.api.config import compose_config  # noqa: E402
from asa.api.export import export_model  # noqa: E402
from asa.api.machinery.run import OptionError  # noqa: E402
from asa.data import write_demo_dataset  # noqa: E402
from asa.data.labels import Task  # noqa: E402
from asa.io import load_checkpoint, load_volume  # noqa: E402

EDGE = 32


def _finetune(tmp_path, layout: str, model: list[str]):
    root = write_demo_dataset(layout, tmp_path / "data", cases=4, size=EDGE, seed=5)
    run = tmp_path / "run"
    finetune(compose_config("finetune", [f"data={layout}", f"data.root={root}", *model, f"data.crop={EDGE}",
                                         "trainer=smoke", f"output_dir={run}", "device=cpu", "data.num_workers=0",
                                         "trainer.epochs=1", "trainer.amp=off"]))
    return run / "checkpoints" / "last.pt"


def _cases(folder, channels: int) -> None:
    """Two cases in nnU-Net's naming: a ball touching the grid's faces, four intensity levels in blocks of 4³."""
    folder.mkdir()
    gen = np.random.default_rng(0)
    centre = (EDGE - 1) / 2
    grid = np.indices((EDGE,) * 3) - centre
    ball = np.sqrt((grid ** 2).sum(0)) <= EDGE / 2
    for case, flip in (("ras", False), ("las", True)):
        for c in range(channels):
            levels = gen.integers(1, 5, size=(EDGE // 4,) * 3).repeat(4, 0).repeat(4, 1).repeat(4, 2)
            image = np.where(ball, 100.0 * levels, 0.0).astype(np.float32)
            affine = np.eye(4)
            if flip:  # stored left to right reversed (LAS), the same head
                image, affine[0, 0], affine[0, 3] = image[::-1].copy(), -1.0, EDGE - 1
            nib.save(nib.Nifti1Image(image, affine), folder / f"{case}_{c:04d}.nii.gz")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not (a.any() or b.any()) else 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.slow  # a pipeline: fine-tuning, the export, nnU-Net's predictor and asa-predict
@pytest.mark.parametrize("layout", ["brats", "msd"])
def test_nnunet_predictor_agrees_with_asa_predict(tmp_path, layout, nnunet_predict):
    last = _finetune(tmp_path, layout, ["model=resenc", "model.size=tiny"])
    folder = export_model(last, tmp_path / "results", format="nnunet-results", license="apache-2.0")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["asa"]["license"] == "apache-2.0" and dataset["asa"]["task"] == layout
    checkpoint = load_checkpoint(folder / "fold_all" / "checkpoint_final.pth")
    assert checkpoint["asa"]["license"] == "apache-2.0" and checkpoint["trainer_name"] == "nnUNetTrainer"
    card = (folder / "README.md").read_text()
    assert "- licence: `apache-2.0`" in card and "nnUNetv2_predict_from_modelfolder" in card
    task = Task.from_dict(load_checkpoint(last)["config"]["outputs"])
    if task.multilabel:
        assert dataset["regions_class_order"] == [2, 1, 4] and dataset["labels"]["WT"] == [1, 2, 4]

    images = tmp_path / "images"
    _cases(images, len(task.channels))
    predict(compose_config("predict", [f"checkpoint={last}", f"input={images}", f"output={tmp_path / 'asa'}",
                                       "device=cpu", "amp=off"]))
    nnunet_predict(folder, images, tmp_path / "nnunet")
    for case in ("ras", "las"):
        ours = load_volume(tmp_path / "asa" / f"{case}.nii.gz", label=True)
        theirs = load_volume(tmp_path / "nnunet" / f"{case}.nii.gz", label=True)
        assert np.allclose(ours.affine, theirs.affine)  # both written back in the input's own space
        brain = load_volume(images / f"{case}_0000.nii.gz").array != 0
        a, b = ours.array.astype(np.int64), theirs.array.astype(np.int64)
        assert len(np.unique(a[brain])) > 1, "the network predicts one label only: nothing is compared"
        assert (a[brain] == b[brain]).mean() >= 0.999
        masks_a, masks_b = task.region_masks(a), task.region_masks(b)
        for name in task.output_names:
            assert _dice(masks_a[name] & brain, masks_b[name] & brain) >= 0.99, (case, name)


@pytest.mark.slow  # a pipeline: fine-tuning before the refusal (6 CPU-s)
def test_nnunet_results_refuses_what_nnunet_cannot_build(tmp_path):
    last = _finetune(tmp_path, "brats", ["model=tiny"])  # the SW-ViT U-Net
    with pytest.raises(OptionError, match="--format nnunet-results: .*'swvit_unetr' network"):
        export_model(last, tmp_path / "results", format="nnunet-results")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("task, expected", [
    (Task("brats", ("t1",), ("WT", "TC", "ET"), True, 3, (0, 1, 2, 4), regions=((1, 2, 4), (1, 4), (4,))),
     {"labels": {"background": 0, "WT": [1, 2, 4], "TC": [1, 4], "ET": 4}, "regions_class_order": [2, 1, 4]}),
    (Task("msd", ("t1",), ("a", "b"), False, 3, (0, 1, 2), class_values=(0, 1, 2)),
     {"labels": {"background": 0, "a": 1, "b": 2}}),
    (Task("wmh", ("t1",), ("wmh",), False, 2, (0, 1, 2), ignore_label=2, class_values=(0, 1)),
     {"labels": {"background": 0, "wmh": 1, "ignore": 2}}),
])
def test_label_layouts_as_nnunet_states_them(task, expected):
    from asa.formats.nnunet import _labels
    assert _labels(task, "run") == expected


def test_a_class_task_nnunet_cannot_write_is_refused():
    from asa.formats.nnunet import _labels
    task = Task("odd", ("t1",), ("a", "b"), False, 3, (0, 1, 4), class_values=(0, 1, 4))
    with pytest.raises(ValueError, match=r"run predicts the label values \[0, 1, 4\]; .* must be 0..2"):
        _labels(task, "run")
