"""asa's resenc export trained by nnU-Net v2's own code, end to end, as docs/weights-elsewhere.md gives the route:
``nnUNetv2_plan_and_preprocess`` on a small dataset in nnU-Net's raw layout, ``asa-export --nnunet-plans`` into
the plans it wrote, then nnU-Net's trainer built from those plans with the export as ``-pretrained_weights``
(`nnunetv2.run.run_training`'s own `get_trainer_from_args` and `maybe_load_checkpoint`): at the start of
training every encoder tensor is the export's, and a short epoch of nnU-Net's training loop runs from it and
changes them. nnU-Net reads its folders from the environment when imported, so its steps run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from asa.formats.nnunet import NNUNET_WEIGHTS
from asa.cli.export import main as export_main
from asa.io import save_checkpoint
from asa.models import network_spec
from asa.formats.nnunet import NNUNET_CONFIGURATION
from asa.models.cnn.resenc import resenc_unet

pytest.importorskip("nnunetv2")
pytestmark = pytest.mark.slow
DATASET = "Dataset997_AsaDemo"


def _raw_dataset(raw: Path, cases: int = 6, size: int = 40) -> None:
    """Spheres of two labels in noise, in nnU-Net's raw layout (imagesTr/<case>_0000.nii.gz, labelsTr)."""
    folder = raw / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"))
    for i in range(cases):
        centre = rng.integers(14, size - 14, 3)[:, None, None, None]
        r = np.sqrt(((grid - centre) ** 2).sum(0))
        label = np.where(r < 6, 2, np.where(r < 11, 1, 0)).astype(np.uint8)
        image = (label * 100.0 + rng.normal(0, 20, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / "labelsTr" / f"case_{i:03d}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "shell": 1, "core": 2},
        "numTraining": cases, "file_ending": ".nii.gz"}))


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_nnunet_trains_from_the_asa_export_with_its_encoder_at_the_start(tmp_path):
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
           "OMP_NUM_THREADS": "1"}
    _raw_dataset(tmp_path / "raw")
    planned = _run("""
        import sys
        from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry
        sys.argv = ["nnUNetv2_plan_and_preprocess", "-d", "997", "-c", "3d_fullres", "-np", "1", "-npfp", "1"]
        plan_and_preprocess_entry()
    """, env)
    assert planned.returncode == 0, planned.stderr[-3000:]
    plans = tmp_path / "pre" / DATASET / "nnUNetPlans.json"

    torch.manual_seed(5)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=3, size="tiny")
    save_checkpoint(tmp_path / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 3})
    export_main([str(tmp_path / "last.pt"), str(tmp_path / "model"), "--nnunet-plans", str(plans)])
    assert NNUNET_CONFIGURATION in json.loads(plans.read_text())["configurations"]
    encoder = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    torch.save(encoder, tmp_path / "encoder_ref.pt")

    trained = _run(f"""
        import torch
        from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

        trainer = get_trainer_from_args("997", "{NNUNET_CONFIGURATION}", 0, "nnUNetTrainer",
                                        device=torch.device("cpu"))
        maybe_load_checkpoint(trainer, False, False, r"{tmp_path / 'model' / NNUNET_WEIGHTS}")
        ref = torch.load(r"{tmp_path / 'encoder_ref.pt'}", weights_only=True)
        start = trainer.network.state_dict()
        differ = [k for k, v in ref.items() if not torch.equal(start[k], v)]
        print("encoder tensors", len(ref), "differing at the start", len(differ), flush=True)
        assert not differ, differ[:5]
        trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
        trainer.run_training()
        end = trainer.network.state_dict()
        moved = sum(not torch.equal(end[k], v) for k, v in ref.items())
        print("encoder tensors changed by training", moved, flush=True)
        assert moved > 0
    """, {**env, "nnUNet_n_proc_DA": "0"})  # 0: nnU-Net's augmentation in the training process
    assert trained.returncode == 0, (trained.stdout[-3000:], trained.stderr[-3000:])
    assert f"encoder tensors {len(encoder)} differing at the start 0" in trained.stdout
    assert (tmp_path / "results" / DATASET / f"nnUNetTrainer__nnUNetPlans__{NNUNET_CONFIGURATION}" / "fold_0"
            / "checkpoint_final.pth").is_file()
