"""The export tests' shared part: nnU-Net v2's own predictor run in the test's process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def nnunet_predict():
    """Predict the cases of a folder in nnU-Net's naming (``CASE_XXXX.nii.gz``) with fold ``all`` of a model folder,
    as ``nnUNetv2_predict_from_modelfolder`` does, into ``out``. The predictor is handed the cases' files: given a
    folder, it lists them in a forked multiprocessing pool, and a fork from a process with live threads (torch's,
    pytest's, multiprocessing's resource sharer) can leave the child on a lock no thread will release."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    def run(model_folder: Path, images: Path, out: Path) -> None:
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=("all",))
        cases = sorted(path.name[:-len("_0000.nii.gz")] for path in images.glob("*_0000.nii.gz"))
        files = [sorted(str(path) for path in images.glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz")) for case in cases]
        out.mkdir()
        predictor.predict_from_files_sequential(files, str(out), save_probabilities=False, overwrite=True)

    threads = torch.get_num_threads()  # nnU-Net's predictor sets torch's thread count
    yield run
    torch.set_num_threads(threads)
