"""Where the Hydra configs live, and composing them as the command line would.

The configs are the package ``asa.configs`` (the top-level ``configs/`` folder, shipped in the
wheel): one folder per entry point (``pretrain/``, ``finetune/``, ``predict/``, ``evaluate/``),
each with its own config groups, plus ``common/`` (encoder sizes and the trainer base shared by
pretraining and fine-tuning) on their search path. In a source checkout that is not installed,
``configs/`` is registered as ``asa.configs`` so that the same ``pkg://`` paths work.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from asa.api import schema

__all__ = ["ENTRY_POINTS", "compose_config", "config_path", "load_config"]

ENTRY_POINTS = ("pretrain", "finetune", "predict", "evaluate", "preprocess", "probe")
_SOURCE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _ensure_package() -> None:
    """Make ``asa.configs`` importable: installed, or the checkout's ``configs/`` folder."""
    if "asa.configs" in sys.modules:
        return
    try:
        if importlib.util.find_spec("asa.configs") is not None:
            return
    except ModuleNotFoundError:
        pass
    init = _SOURCE_CONFIGS / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(
            f"asa's Hydra configs were not found: neither the package asa.configs nor {_SOURCE_CONFIGS} exists; "
            "reinstall asa (pip install .)"
        )
    spec = importlib.util.spec_from_file_location("asa.configs", init, submodule_search_locations=[str(_SOURCE_CONFIGS)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["asa.configs"] = module
    spec.loader.exec_module(module)


def config_path(entry: str) -> str:
    """``pkg://asa.configs.<entry>``: the config folder of one entry point (schemas registered)."""
    if entry not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {entry!r}; expected one of {ENTRY_POINTS}")
    _ensure_package()
    schema.register()
    return f"pkg://asa.configs.{entry}"


def compose_config(name: str = "pretrain", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose an entry point's config as its command line would (for notebooks and tests), without running it."""
    from hydra import compose, initialize_config_module

    module = config_path(name).removeprefix("pkg://")
    with initialize_config_module(config_module=module, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def load_config(name: str, *overrides: str) -> Any:
    """A job's typed config (``PretrainConfig``, ``FinetuneConfig``, ``PredictConfig`` or
    ``EvaluateConfig``) with the console script's defaults and these ``key=value`` overrides, e.g.
    ``load_config("pretrain", "model=small", "trainer=smoke")``; set its fields as attributes, then
    pass it to ``asa.api.pretrain`` etc. Interpolated values (``trainer.schedule`` follows
    ``optim.schedule``) are resolved here: change such fields together, or pass an override instead.
    Required values left open (``???``, e.g. ``checkpoint`` of predict) must be set before running."""
    return OmegaConf.to_object(schema.validate(compose_config(name, overrides), name))
