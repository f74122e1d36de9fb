"""nnU-Net's nnssl route (``nnUNetv2_preprocess_like_nnssl``, ``PretrainedTrainer``; MIC-DKFZ/nnUNet's main branch)
with asa's nnssl export: where the encoder's left-right axis lands, and whether the trained model predicts.

The route builds its plans from the dataset's own nnU-Net plans and ignores the reader and transposes that the
checkpoint's plan states, so the dataset's ``dataset.json`` and plans decide what the encoder sees. The cases are
`benchmarks.outside_data.lesion_case` (each in one of the 48 voxel orientations, at one isotropic voxel edge). asa's
nnssl export of a tiny ResEnc (random weights, resampling recorded at that edge, so ``-am like_pretrained`` keeps the
grid) goes through the route once per variant of the dataset:

- ``nnunet_default``: the route as nnU-Net's docs give it (``nnUNetv2_plan_and_preprocess``, here with the ResEnc-L
  planner and ``--no_pp``, then ``nnUNetv2_preprocess_like_nnssl``);
- ``reader``: ``"overwrite_image_reader_writer": "NibabelIOWithReorient"`` in ``dataset.json`` before planning;
- ``reader_and_transpose``: that, and ``transpose_forward`` / ``transpose_backward`` ``[2, 1, 0]`` in the plans file
  the route copies, before ``nnUNetv2_preprocess_like_nnssl`` (docs/weights-elsewhere.md);
- then the ``reader`` dataset again with the transposes set after its first ``nnUNetv2_preprocess_like_nnssl``:
  rerun as it is and with ``--overwrite_pp`` (the route keeps a data folder that exists).

Per case, the preprocessed label map (``-1`` outside the image's nonzero region read as 0, put back into its
bounding box) is matched against asa's RAS label map (`asa.io.load_volume`) under each of the 48 axis permutations
and flips: the one that matches says on which axis of nnU-Net's array asa's left-right axis lands, and in which
direction; the preprocessed image's correlation with asa's image under it is recorded beside.

On the last variant the trainer ``nnUNetv2_train_pretrained`` builds (``get_trainer_from_args``, ``PretrainedTrainer``,
CPU) loads the export (the encoder's and stem's tensors against the file's) and trains one epoch of two steps; then
``nnUNetv2_predict`` runs on held-out cases with the checkpoint as trained (nnU-Net's predictor calls
``PretrainedTrainer.build_network_architecture`` with another signature and fails) and with a copy whose
``trainer_name`` is ``nnUNetTrainer`` (``-chk``; the same ``get_network_from_plans`` builds the network), whose
labels are compared voxel by voxel with those of the trained network itself (``nnUNetPredictor.manual_initialization``).

The documented part runs the page's commands as a user types them (`PAGE`, through ``asa-nnunet``), in an
environment with nnU-Net's three folders set and nothing else of nnU-Net's: on BraTS phantoms (48³, 1 mm) with their
four contrasts (Dataset137, the page's) and with the T1 alone, through the smoke trainer and ``nnUNetv2_predict``;
before the fixes it also records nnU-Net's own commands, a relative ``-pc`` given to nnU-Net's own command, no
``-device cpu`` and ``nnUNet_n_proc_DA=0``.

Printed and written to ``OUT/route.json`` and ``OUT/documented.json``. But for the records of nnU-Net's own commands,
nnU-Net runs through ``asa-nnunet`` (or in this process after the same import), so it runs on the CPU torch beside
PyPI's torchvision. Needs nnU-Net's main branch in the interpreter's environment, asa installed there (the documented part
puts the smoke trainer into nnU-Net's trainer folder, as the page does):

    python -m benchmarks.nnunet_nnssl_route --out /tmp/route --nnunet-commit 0e49508   # 5 + 2 cases at 3 mm
    python -m benchmarks.nnunet_nnssl_route --out /tmp/route --parts documented --nnunet-commit 0e49508
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from asa.api.export import export_model
from asa.io import load_volume, save_checkpoint
from asa.formats.nnssl import route_plans_name
from asa.formats.nnunet import READER
from asa.io.hub import NNSSL_CHECKPOINT
from asa.models import network_spec
from asa.models.cnn.resenc import resenc_unet
from asa.models.torchvision_ops import import_torchvision
from benchmarks.outside_data import lesion_case

FIRST_ID = 601  # the variants' datasets: Dataset601_route_nnunet_default, ...
VARIANTS = {"nnunet_default": (None, None), "reader": ("NibabelIOWithReorient", None),
            "reader_and_transpose": ("NibabelIOWithReorient", [2, 1, 0])}
PLANNING = ("-pl", "nnUNetPlannerResEncL", "--no_pp", "--verify_dataset_integrity")  # as docs/weights-elsewhere.md
PRETRAINING = "asa_tiny"  # nnUNetv2_preprocess_like_nnssl -n
# like_nnssl.preprocess_like_nnssl copies the first of these that exists
ROUTE_PLANS = ["nnUNetPlans"] + [f"nnUNetResEncUNet{k}Plans" for k in ("M", "L", "XL")]


def nnunet(name: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """nnU-Net's console command ``name`` with ``args`` as the docs start it (``asa-nnunet``), by this interpreter;
    output captured."""
    done = subprocess.run([sys.executable, "-m", "asa.cli.nnunet", name, *args], env=env, capture_output=True,
                          text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def write_cases(root: Path, *, train: int, test: int, spacing: float, seed: int) -> dict[str, str]:
    """``root/cases/{imagesTr,labelsTr}`` (``train`` lesion cases in nnU-Net's raw layout) and ``root/test`` (``test``
    other images); each case's stored orientation (nibabel's axis codes)."""
    for name in ("imagesTr", "labelsTr", "test"):
        (root / ("cases" if name != "test" else "") / name).mkdir(parents=True, exist_ok=True)
    codes = {}
    for i in range(train + test):
        volume, label, affine, _ = lesion_case(seed + i, spacing=spacing)
        case = f"case_{i:03d}"
        images = root / "cases" / "imagesTr" if i < train else root / "test"
        nib.save(nib.Nifti1Image(volume, affine), str(images / f"{case}_0000.nii.gz"))
        if i < train:
            nib.save(nib.Nifti1Image(label, affine), str(root / "cases" / "labelsTr" / f"{case}.nii.gz"))
        codes[case] = "".join(nib.aff2axcodes(affine))
    return codes


def export_tiny(root: Path, *, crop: int, spacing: float) -> Path:
    """asa's nnssl export (``checkpoint_final.pth``) of a tiny ResEnc with random weights, pretrained (so its record
    says) on images resampled to ``spacing`` mm."""
    torch.manual_seed(0)
    net = resenc_unet(img_size=crop, in_channels=1, out_channels=1, size="tiny")
    for p in net.parameters():  # distinct values everywhere (norm weights start as ones)
        p.data.normal_()
    config = {"data": {"resample_mm": spacing, "crop": crop}, "method": {"name": "random"}}
    save_checkpoint(root / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 1,
                                       "config": config})
    return export_model(root / "last.pt", root / "export", license="other") / NNSSL_CHECKPOINT


def matching_axes(ours: np.ndarray, theirs: np.ndarray) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (perm, flips) with ``np.flip(ours.transpose(perm), flips) == theirs``: nnU-Net's axis ``j`` holds asa's
    axis ``perm[j]``, reversed for ``j`` in ``flips``."""
    found = []
    for perm in itertools.permutations(range(3)):
        moved = ours.transpose(perm)
        if moved.shape != theirs.shape:
            continue
        for k in range(4 * 2):
            flips = tuple(a for a in range(3) if k >> a & 1)
            if np.array_equal(np.flip(moved, flips), theirs):
                found.append((perm, flips))
    return found


def preprocessed_case(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's preprocessed image and label map of ``case`` put back into the array before cropping (0 outside
    the crop; the label's -1, outside the image's nonzero region, read as 0)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(str(folder))(str(folder), [case])
    data, seg, _, props = dataset.load_case(case)
    image, label = np.zeros(props["shape_before_cropping"], np.float32), np.zeros(props["shape_before_cropping"])
    box = tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])
    image[box], label[box] = np.asarray(data[0]), np.maximum(np.asarray(seg[0]), 0)
    return image, label


def plan(root: Path, env: dict[str, str], *, dataset_id: int, name: str, reader: str | None,
         cases: int) -> tuple[Path, Path]:
    """The cases as dataset ``dataset_id`` (``reader`` in its dataset.json), planned as the docs plan it
    (``nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncL --no_pp``): its preprocessed folder and the plans file
    the route copies."""
    dataset = f"Dataset{dataset_id}_route_{name}"
    raw = Path(env["nnUNet_raw"]) / dataset
    shutil.copytree(root / "cases", raw)
    meta = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1}, "numTraining": cases,
            "file_ending": ".nii.gz", **({"overwrite_image_reader_writer": reader} if reader else {})}
    (raw / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    nnunet("nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), *PLANNING, "-np", "1", env=env)
    preprocessed = Path(env["nnUNet_preprocessed"]) / dataset
    return preprocessed, next(preprocessed / f"{p}.json" for p in ROUTE_PLANS if (preprocessed / f"{p}.json").is_file())


def set_transpose(plans_file: Path, transpose: list[int]) -> None:
    """``transpose_forward`` and ``transpose_backward`` of the plans file set to ``transpose`` (the docs' step)."""
    plans = json.loads(plans_file.read_text())
    plans_file.write_text(json.dumps({**plans, "transpose_forward": transpose, "transpose_backward": transpose},
                                     indent=4))


def like_nnssl(root: Path, env: dict[str, str], *, dataset_id: int, preprocessed: Path, checkpoint: Path,
               codes: dict[str, str], overwrite: bool = False) -> dict:
    """``nnUNetv2_preprocess_like_nnssl -am like_pretrained`` of the export on dataset ``dataset_id``; the record:
    the plans it wrote and, per case, where asa's left-right axis landed in the preprocessed arrays."""
    printed = nnunet("nnUNetv2_preprocess_like_nnssl", "-d", str(dataset_id), "-n", PRETRAINING, "-pc",
                     str(checkpoint), "-am", "like_pretrained", "-np", "1", *(["--overwrite_pp"] if overwrite else []),
                     env=env).stdout
    plans_file = next(preprocessed.glob(f"ptPlans__{PRETRAINING}____*.json"))
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    rows = []
    for case, orientation in codes.items():
        image, label = preprocessed_case(preprocessed / config["data_identifier"], case)
        ours = load_volume(root / "cases" / "labelsTr" / f"{case}.nii.gz", label=True).array
        found = matching_axes(ours, label)
        row = {"case": case, "stored": orientation, "matches": len(found)}
        if len(found) == 1:
            (perm, flips), = found
            axis = perm.index(0)
            ras = load_volume(root / "cases" / "imagesTr" / f"{case}_0000.nii.gz", label=False).array
            moved = np.flip(ras.transpose(perm), flips)
            inside = image != 0  # the region nnU-Net's z-score covers
            row |= {"left_right_axis": axis, "left_to_right": axis not in flips, "permutation": list(perm),
                    "flipped_axes": list(flips), "as_asa": perm == (0, 1, 2) and not flips,
                    "image_correlation": round(float(np.corrcoef(image[inside], moved[inside])[0, 1]), 6)}
        rows.append(row)
    return {"route_plans": plans_file.name, "image_reader_writer": plans["image_reader_writer"],
            "transpose_forward": plans["transpose_forward"], "spacing": config["spacing"],
            "patch_size": config["patch_size"], "overwrite_pp": overwrite,
            "preprocessing_skipped": "Skipping preprocessing" in printed, "cases": rows,
            "all_as_asa": all(r.get("as_asa", False) for r in rows)}


def train_and_predict(root: Path, env: dict[str, str], *, dataset_id: int, checkpoint: Path) -> dict:
    """``PretrainedTrainer`` on dataset ``dataset_id`` (CPU, fold all, one epoch of two steps): the export's tensors
    as loaded, then ``nnUNetv2_predict`` of ``root/test`` with the checkpoint as trained and with the workaround."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.run.run_training_from_pretrained import get_trainer_from_args

    plans_name = next((Path(env["nnUNet_preprocessed"]) / f"Dataset{dataset_id}_route_reader_and_transpose").glob(
        f"ptPlans__{PRETRAINING}____*.json")).stem
    started = time.perf_counter()
    os.environ["nnUNet_n_proc_DA"] = "0"  # the trainer's batches in this process (the planner needs at least 1)
    trainer = get_trainer_from_args(str(dataset_id), "3d_fullres", "all", "PretrainedTrainer", plans_name,
                                    device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.initialize()
    info = trainer.plans_manager.plans["pretrain_info"]
    file = torch.load(checkpoint, weights_only=True)["network_weights"]
    own = trainer.network.state_dict()
    keys = [k for k in file if k.startswith((info["key_to_encoder"] + ".", info["key_to_stem"] + "."))]
    differing = [k for k in keys if not torch.equal(own[k], file[k])]
    trainer.run_training()
    seconds = round(time.perf_counter() - started, 1)
    folder = Path(trainer.output_folder)
    predict = ["-i", str(root / "test"), "-d", str(dataset_id), "-c", "3d_fullres", "-f", "all", "-tr",
               "PretrainedTrainer", "-p", plans_name, "--disable_tta", "-device", "cpu", "-npp", "1", "-nps", "1"]
    as_trained = nnunet("nnUNetv2_predict", *predict, "-o", str(root / "pred_as_trained"), env=env, check=False)
    blob = torch.load(folder / "checkpoint_final.pth", weights_only=False)  # the workaround of the docs
    torch.save({**blob, "trainer_name": "nnUNetTrainer"}, folder / "checkpoint_predict.pth")
    nnunet("nnUNetv2_predict", *predict, "-o", str(root / "pred_workaround"), "-chk", "checkpoint_predict.pth",
           env=env)
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"))
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, "PretrainedTrainer", None)
    predictor.predict_from_files(str(root / "test"), str(root / "pred_trained_network"), save_probabilities=False,
                                 overwrite=True, num_processes_preprocessing=1, num_processes_segmentation_export=1)
    rows = []
    for image in sorted((root / "test").glob("*_0000.nii.gz")):
        case = image.name.removesuffix("_0000.nii.gz")
        source, written = nib.load(str(image)), nib.load(str(root / "pred_workaround" / f"{case}.nii.gz"))
        reference = nib.load(str(root / "pred_trained_network" / f"{case}.nii.gz"))
        rows.append({"case": case, "shape_and_affine_of_input": written.shape == source.shape
                     and np.allclose(written.affine, source.affine, atol=1e-4),
                     "voxels_differing_from_trained_network": int((np.asarray(written.dataobj)
                                                                   != np.asarray(reference.dataobj)).sum()),
                     "labelled_voxels": int((np.asarray(written.dataobj) > 0).sum())})
    error = as_trained.stderr.strip().splitlines()[-1] if as_trained.returncode else None
    return {"plans": plans_name, "encoder_and_stem_tensors": len(keys), "differing_from_export": len(differing),
            "epochs": trainer.num_epochs, "steps_per_epoch": trainer.num_iterations_per_epoch,
            "training_seconds": seconds,
            "predict_as_trained": {"returncode": as_trained.returncode, "error": error},
            "predict_workaround": {"chk": "checkpoint_predict.pth", "trainer_name": "nnUNetTrainer", "cases": rows}}


# The page's commands (docs/weights-elsewhere.md, nnU-Net's nnssl route), run as written but for the fields: the docs'
# values are `DOCS` (tests/benchmarks/test_nnssl_route.py finds each line in the page with them).
PAGE = {
    "plan": "nnUNetv2_plan_and_preprocess -d {id} -pl nnUNetPlannerResEncL --no_pp --verify_dataset_integrity",
    "transpose": "python -c \"import json, sys; d = json.load(open(sys.argv[1])); d['transpose_forward'] = "
                 "d['transpose_backward'] = [2, 1, 0]; json.dump(d, open(sys.argv[1], 'w'), indent=4)\" "
                 "$nnUNet_preprocessed/{dataset}/nnUNetResEncUNetLPlans.json",
    "export": "asa-export runs/pretrain/checkpoints/last.pt models/resenc-L",
    "route": "asa-nnunet nnUNetv2_preprocess_like_nnssl -d {id} -n asa_resencL -pc models/resenc-L/checkpoint_final.pth "
             "-am like_pretrained",
    "smoke_trainer": "cat > \"$(python -c 'import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))')"
                     "/training/nnUNetTrainer/PretrainedTrainer_smoke.py\" <<'EOF'\n"
                     "import torch\n"
                     "from nnunetv2.training.nnUNetTrainer.pretraining.pretrainedTrainer import PretrainedTrainer\n\n\n"
                     "class PretrainedTrainer_smoke(PretrainedTrainer):  # 1 epoch of 2 steps, 1 validation step\n"
                     "    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,\n"
                     "                 device: torch.device = torch.device(\"cuda\")):\n"
                     "        super().__init__(plans, configuration, fold, dataset_json, device)\n"
                     "        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1\n"
                     "EOF",
    "train": "asa-nnunet nnUNetv2_train_pretrained {id} 3d_fullres 0 -p {plans} -tr {trainer} -device cpu",
    "copy": "FOLD=$nnUNet_results/{dataset}/{trainer}__{plans}__3d_fullres/fold_0\n"
            "python -c \"import torch, sys; c = torch.load(sys.argv[1] + '/checkpoint_final.pth', weights_only=False); "
            "c['trainer_name'] = 'nnUNetTrainer'; torch.save(c, sys.argv[1] + '/checkpoint_predict.pth')\" $FOLD",
    "predict": "asa-nnunet nnUNetv2_predict -i {images} -o {predictions} -d {id} -c 3d_fullres -f 0 -tr {trainer} "
               "-p {plans} -chk checkpoint_predict.pth -device cpu",
}
DOCS = {"id": "137", "dataset": "Dataset137_BraTS2021", "plans": route_plans_name("asa_resencL", (1, 1, 1), 4),
        "trainer": "PretrainedTrainer", "images": "IMAGES", "predictions": "PREDICTIONS"}
SMOKE = "PretrainedTrainer_smoke"  # the page's smoke-test trainer, which the run trains with
# the demo sets: BraTS phantoms (asa.data.synthetic, 48³ at 1 mm, stored LPS), all four contrasts and the T1 alone
DOCUMENTED_SETS = {137: ("Dataset137_BraTS2021", ("t1", "t1ce", "t2", "flair")), 138: ("Dataset138_BraTS2021T1", ("t1",))}
BRATS_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3}  # BraTS's 4 is nnU-Net's 3 (consecutive)


def page(step: str, **fields: str) -> str:
    """The page's command ``step`` with ``fields`` in place of the docs' values."""
    return PAGE[step].format(**{**DOCS, **fields})


def shell(command: str, *, cwd: Path, env: dict[str, str]) -> dict:
    """``command`` run by bash in ``cwd``: its exit code, seconds and last line of error output."""
    started = time.perf_counter()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {"command": command, "returncode": done.returncode, "seconds": round(time.perf_counter() - started, 1),
            "last_error_line": lines[-1] if done.returncode and lines else None, "stdout_tail": done.stdout[-400:]}


def write_brats_sets(root: Path, env: dict[str, str], *, train: int, test: int) -> dict[int, Path]:
    """The demo sets of `DOCUMENTED_SETS` in nnU-Net's raw layout (``dataset.json`` with the page's reader) and their
    held-out images (``root/images<id>``)."""
    from asa.data.synthetic.demo import write_demo_dataset

    source = write_demo_dataset("brats", root / "brats", cases=train + test, size=48)
    images = {}
    for dataset_id, (name, contrasts) in DOCUMENTED_SETS.items():
        raw, held_out = Path(env["nnUNet_raw"]) / name, root / f"images{dataset_id}"
        for folder in (raw / "imagesTr", raw / "labelsTr", held_out):
            folder.mkdir(parents=True)
        for i, case in enumerate(sorted(p.name for p in source.iterdir())):
            for c, contrast in enumerate(contrasts):
                shutil.copy(source / case / f"{case}_{contrast}.nii.gz",
                            (raw / "imagesTr" if i < train else held_out) / f"{case}_{c:04d}.nii.gz")
            if i < train:
                seg = nib.load(str(source / case / f"{case}_seg.nii.gz"))
                label = np.asarray(seg.dataobj).astype(np.uint8)
                label[label == 4] = 3
                nib.save(nib.Nifti1Image(label, seg.affine), str(raw / "labelsTr" / f"{case}.nii.gz"))
        meta = {"channel_names": {str(c): contrast for c, contrast in enumerate(contrasts)}, "labels": BRATS_LABELS,
                "numTraining": train, "file_ending": ".nii.gz", "overwrite_image_reader_writer": READER}
        (raw / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
        images[dataset_id] = held_out
    return images


def predictions(images: Path, written: Path) -> list[dict]:
    """Per held-out case: a label map written in its input's shape and affine, and its labels."""
    rows = []
    for image in sorted(images.glob("*_0000.nii.gz")):
        case = image.name.removesuffix("_0000.nii.gz")
        path = written / f"{case}.nii.gz"
        if not path.is_file():
            rows.append({"case": case, "written": False})
            continue
        source, label = nib.load(str(image)), nib.load(str(path))
        values = np.asarray(label.dataobj)
        rows.append({"case": case, "written": True, "shape_and_affine_of_input": label.shape == source.shape
                     and np.allclose(label.affine, source.affine, atol=1e-4),
                     "labels": sorted(int(v) for v in np.unique(values)), "labelled_voxels": int((values > 0).sum())})
    return rows


def documented_route(root: Path, env: dict[str, str], *, train: int, test: int) -> dict:
    """The page's commands on 4-channel and 1-channel demo sets, in a folder of their own (``root``, the relative
    ``-pc``'s base) with training and prediction started from another (``root/elsewhere``), as `PAGE` gives them
    with the smoke trainer; before them, on the 4-channel set, what the page's fixes stand against: nnU-Net's own
    commands (torchvision's import), a relative ``-pc`` stored by nnU-Net's own command, and no ``-device cpu``."""
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    elsewhere = root / "elsewhere"
    elsewhere.mkdir(parents=True)
    images = write_brats_sets(root, env, train=train, test=test)
    torch.manual_seed(0)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    save_checkpoint(root / "runs" / "pretrain" / "checkpoints" / "last.pt",
                    {"model": net.state_dict(), "network": network_spec(net), "step": 1,
                     "config": {"data": {"resample_mm": 1.0, "crop": 32}, "method": {"name": "random"}}})
    record: dict = {"export": shell(page("export"), cwd=root, env=env), "sets": {}}
    checkpoint = torch.load(root / "models" / "resenc-L" / NNSSL_CHECKPOINT, weights_only=True)
    spacing = checkpoint["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"]
    spacing = next(iter(spacing.values()))["spacing"]
    for dataset_id, (name, contrasts) in DOCUMENTED_SETS.items():
        plans = route_plans_name("asa_resencL", spacing, len(contrasts))
        fields = {"id": str(dataset_id), "dataset": name, "plans": plans, "trainer": SMOKE,
                  "images": str(images[dataset_id]), "predictions": str(root / f"predictions{dataset_id}")}
        steps = {"plan": shell(page("plan", **fields), cwd=root, env=env)}
        before = {}
        if dataset_id == 137:
            before["plan_with_n_proc_DA_0"] = shell(page("plan", **fields), cwd=root,
                                                    env={**env, "nnUNet_n_proc_DA": "0"})
        steps["transpose"] = shell(page("transpose", **fields), cwd=root, env=env)
        if dataset_id == 137:
            plain_route = page("route", **fields).removeprefix("asa-nnunet ")
            before["route_without_asa_nnunet"] = shell(plain_route, cwd=root, env=env)
            stored = json.loads((Path(env["nnUNet_preprocessed"]) / name / f"{plans}.json").read_text())
            before["route_without_asa_nnunet"]["checkpoint_path_stored"] = stored["pretrain_info"]["checkpoint_path"]
            steps["smoke_trainer"] = shell(page("smoke_trainer"), cwd=root, env=env)
            before["train_with_that_plans"] = shell(page("train", **fields), cwd=elsewhere, env=env)
            before["train_without_asa_nnunet"] = shell(page("train", **fields).removeprefix("asa-nnunet "),
                                                       cwd=elsewhere, env=env)
        steps["route"] = shell(page("route", **fields), cwd=root, env=env)
        stored = json.loads((Path(env["nnUNet_preprocessed"]) / name / f"{plans}.json").read_text())
        steps["route"]["checkpoint_path_stored"] = stored["pretrain_info"]["checkpoint_path"]
        if dataset_id == 137:
            before["train_without_device_cpu"] = shell(page("train", **fields).removesuffix(" -device cpu"),
                                                       cwd=elsewhere, env=env)
        steps["train"] = shell(page("train", **fields), cwd=elsewhere, env=env)
        steps["copy"] = shell(page("copy", **fields), cwd=elsewhere, env=env)
        if dataset_id == 137:
            before["predict_without_asa_nnunet"] = shell(page("predict", **fields).removeprefix("asa-nnunet "),
                                                         cwd=elsewhere, env=env)
            before["predict_without_device_cpu"] = shell(page("predict", **fields).removesuffix(" -device cpu"),
                                                         cwd=elsewhere, env=env)
            shutil.rmtree(fields["predictions"], ignore_errors=True)  # what a failed run left, if anything
        steps["predict"] = shell(page("predict", **fields), cwd=elsewhere, env=env)
        log = next((Path(env["nnUNet_results"]) / name / f"{SMOKE}__{plans}__3d_fullres" / "fold_0").glob(
            "training_log_*.txt"), None)
        record["sets"][name] = {
            "channels": len(contrasts), "plans_name_expected": plans,
            "plans_written": sorted(p.stem for p in (Path(env["nnUNet_preprocessed"]) / name).glob("ptPlans__*.json")),
            "plans_line_printed": next((line for line in steps["route"]["stdout_tail"].splitlines()
                                        if line.startswith("[asa-nnunet] plans written")), None),
            "steps": steps, "before_the_fixes": before,
            "training_log_epochs": log.read_text().count("Epoch time") if log else None,
            "predictions": predictions(images[dataset_id], Path(fields["predictions"]))}
    return record


def versions() -> dict:
    """What ran: Python, torch, torchvision (and whether it imports on its own), nnU-Net and the networks' packages."""
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    lines = plain.stderr.strip().splitlines()
    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": version("torchvision"),
            "import_torchvision_alone": lines[-1] if plain.returncode else "imports",
            "nnunetv2": version("nnunetv2"), "dynamic_network_architectures": version("dynamic_network_architectures"),
            "timm": version("timm"), "asa": version("asa")}


def axes_and_training(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The axis variants, the rerun, and PretrainedTrainer's load, training and predictions (``route.json``)."""
    started = time.perf_counter()
    codes = write_cases(args.out, train=args.train, test=args.test, spacing=args.spacing, seed=args.seed)
    checkpoint = export_tiny(args.out, crop=args.crop, spacing=args.spacing)
    pretrain = torch.load(checkpoint, weights_only=True)["nnssl_adaptation_plan"]["pretrain_plan"]
    record: dict = {"nnunetv2": version("nnunetv2"), "nnunet_commit": args.nnunet_commit, "torch": torch.__version__,
                    "train": args.train, "test": args.test, "spacing_mm": args.spacing, "crop": args.crop,
                    "export_plan": {"image_reader_writer": pretrain["image_reader_writer"],
                                    "transpose_forward": pretrain["transpose_forward"]},
                    "variants": {}}
    train_codes = {c: o for c, o in codes.items() if int(c[-3:]) < args.train}
    folders = {}
    for i, (name, (reader, transpose)) in enumerate(VARIANTS.items()):
        folders[name] = plan(args.out, env, dataset_id=FIRST_ID + i, name=name, reader=reader, cases=args.train)
        planned = json.loads(folders[name][1].read_text())["transpose_forward"]
        if transpose is not None:
            set_transpose(folders[name][1], transpose)
        record["variants"][name] = {"dataset_json_reader": reader, "transpose_set": transpose,
                                    "planned_transpose_forward": planned,
                                    **like_nnssl(args.out, env, dataset_id=FIRST_ID + i, preprocessed=folders[name][0],
                                                 checkpoint=checkpoint, codes=train_codes)}
    # the transposes set after the route has preprocessed: like_nnssl keeps an existing data folder unless told
    preprocessed, plans_file = folders["reader"]
    set_transpose(plans_file, [2, 1, 0])
    record["transpose_set_after_preprocessing"] = {
        k: like_nnssl(args.out, env, dataset_id=FIRST_ID + 1, preprocessed=preprocessed, checkpoint=checkpoint,
                      codes=train_codes, overwrite=overwrite) for k, overwrite in (("rerun", False),
                                                                                  ("rerun_overwrite_pp", True))}
    record["test_orientations"] = {c: o for c, o in codes.items() if int(c[-3:]) >= args.train}
    record["training"] = train_and_predict(args.out, env, dataset_id=FIRST_ID + len(VARIANTS) - 1,
                                           checkpoint=checkpoint)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["load_average_1_min_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: times read with it
    (args.out / "route.json").write_text(json.dumps(record, indent=1) + "\n")
    for name, variant in [*record["variants"].items(), *record["transpose_set_after_preprocessing"].items()]:
        print(name, [(r["stored"], r.get("left_right_axis"), r.get("left_to_right")) for r in variant["cases"]])
    print(json.dumps(record["training"], indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="an empty folder for the cases and nnU-Net's folders")
    p.add_argument("--train", type=int, default=5, help="training cases (default 5)")
    p.add_argument("--test", type=int, default=2, help="held-out cases for nnUNetv2_predict (default 2)")
    p.add_argument("--spacing", type=float, default=3.0, help="the cases' voxel edge in mm (default 3)")
    p.add_argument("--crop", type=int, default=32, help="the exported network's crop (default 32)")
    p.add_argument("--seed", type=int, default=2000, help="seed of the first case (default 2000)")
    p.add_argument("--nnunet-commit", default=None, help="the MIC-DKFZ/nnUNet commit installed, for the record")
    p.add_argument("--parts", nargs="+", choices=("axes", "documented"), default=["axes", "documented"],
                   help="axes: the axis variants and PretrainedTrainer's load (route.json); documented: the page's "
                        "commands on 4- and 1-channel demo sets (documented.json); default both")
    p.add_argument("--documented-cases", type=int, nargs=2, default=(6, 2), metavar=("TRAIN", "TEST"),
                   help="the documented sets' training and held-out cases (default 6 2; fold 0 needs 5 to train)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
           **{k: str(args.out / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    os.environ.update(env)  # nnunetv2.paths reads them when first imported (by the functions below)
    import_torchvision()  # as asa-nnunet does: the CPU torch beside PyPI's torchvision (docs/weights-elsewhere.md)
    if "axes" in args.parts:
        axes_and_training(args, env)
    if "documented" in args.parts:
        documented(args)


def documented(args: argparse.Namespace) -> dict:
    """`documented_route` in ``OUT/documented`` in a user's environment: nnU-Net's three folders set, nothing else of
    nnU-Net's (its defaults on a CPU machine); the record, with what ran, as ``OUT/documented.json``."""
    root = args.out / "documented"
    env = {**{k: v for k, v in os.environ.items() if k not in ("nnUNet_n_proc_DA", "nnUNet_compile")},
           **{k: str(root / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    started = time.perf_counter()
    train, test = args.documented_cases
    record = {**versions(), "nnunet_commit": args.nnunet_commit, "cores": os.cpu_count(), "train": train,
              "test": test, "docs_fields": DOCS, **documented_route(root, env, train=train, test=test)}
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["load_average_1_min_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: times read with it
    (args.out / "documented.json").write_text(json.dumps(record, indent=1) + "\n")
    for name, outcome in record["sets"].items():
        print(name, {k: v["returncode"] for k, v in outcome["steps"].items()},
              {k: v["last_error_line"] for k, v in outcome["before_the_fixes"].items()})
    return record


if __name__ == "__main__":
    main()

