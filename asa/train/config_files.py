"""Where the Hydra configs live: the installed package `asa.configs`, or `configs/` of a source checkout."""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["config_path", "compose_config"]

_SOURCE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _package_available() -> bool:
    try:
        return importlib.util.find_spec("asa.configs") is not None
    except ModuleNotFoundError:
        return False


def config_path() -> str:
    """`pkg://asa.configs` when the package ships its configs (pip install .), else the absolute path
    of the checkout's `configs/` (e.g. when tests import `asa` from the source tree)."""
    if _package_available():
        return "pkg://asa.configs"
    if (_SOURCE_CONFIGS / "pretrain.yaml").is_file():
        return str(_SOURCE_CONFIGS)
    raise FileNotFoundError(
        f"asa's Hydra configs were not found: neither the package asa.configs nor {_SOURCE_CONFIGS} exists; "
        "reinstall asa (pip install .)"
    )


def compose_config(name: str = "pretrain", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose a config as the command line would (for notebooks and tests), without running anything."""
    from hydra import compose, initialize_config_dir, initialize_config_module

    path = config_path()
    if path.startswith("pkg://"):
        ctx = initialize_config_module(config_module="asa.configs", version_base="1.3")
    else:
        ctx = initialize_config_dir(config_dir=path, version_base="1.3")
    with ctx:
        return compose(config_name=name, overrides=list(overrides))
