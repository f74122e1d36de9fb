"""Shared test setup: deterministic, single-threaded-friendly CPU runs."""

from __future__ import annotations

import pytest
import torch
import yaml

from asa.api import finetune, load_config
from asa.data import write_demo_dataset
from asa.io import load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class OldRun:
    """A tiny fine-tuning run (tiny SW-ViT U-Net, 16³ crops, 4 demo IBSR cases) in ``<tmp>/run``, for the
    tests that resume a run written by an earlier version: `train` runs or resumes it, `rewrite` edits
    what it saved (every checkpoint's run config and state, and config.yaml) into an older layout."""

    def __init__(self, tmp_path) -> None:
        self.root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=24, seed=1)
        self.dir = tmp_path / "run"

    def config(self, steps: int, resume: bool, *overrides: str):
        cfg = load_config("finetune", "data=ibsr", "trainer=smoke", "model=tiny", *overrides)
        cfg.output_dir, cfg.device, cfg.seed, cfg.resume = str(self.dir), "cpu", 0, resume
        cfg.data.root, cfg.data.num_workers, cfg.data.crop = str(self.root), 0, 16
        cfg.data.split.ratios = [3, 1, 0]
        cfg.trainer.max_steps, cfg.trainer.epochs = steps, steps
        cfg.trainer.panel_every = 0  # trainer=smoke draws a panel (a whole-case prediction) every epoch: not resumed state
        return cfg

    def train(self, steps: int, resume: bool, *overrides: str):
        return finetune(self.config(steps, resume, *overrides))

    def rewrite(self, config, state=None) -> None:
        """``config(run config) -> the older one`` on every checkpoint and config.yaml, without the version of its
        layout (written before run configs recorded one: read through every migration); ``state(checkpoint)``
        edits the rest of a checkpoint in place."""
        def older(saved: dict) -> dict:
            return {k: v for k, v in config(saved).items() if k != "version"}

        for ckpt in (self.dir / "checkpoints").glob("*.pt"):
            saved = load_checkpoint(ckpt)
            if "config" in saved:
                saved["config"] = older(saved["config"])
            if state is not None:
                state(saved)
            save_checkpoint(ckpt, saved)
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(older(yaml.safe_load(path.read_text()))))


@pytest.fixture
def old_run(tmp_path) -> OldRun:
    return OldRun(tmp_path)
