"""Where the Hydra configs live, and composing them as the command line would.

The configs are the package ``asa.configs`` (the top-level ``configs/`` folder, shipped in the
wheel): one folder per entry point (``pretrain/``, ``finetune/``, ``predict/``, ``evaluate/``),
each with its own config groups, plus ``common/`` (encoder sizes and the trainer base shared by
pretraining and fine-tuning) on their search path. In a source checkout that is not installed,
``configs/`` is registered as ``asa.configs`` so that the same ``pkg://`` paths work.
"""
from __future__ import annotations

import dataclasses

import importlib.util
import re
import sys
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from asa.api.configuration import checks, compat
from asa.methods.base import registered_methods
from asa.models import NETWORK_SETTINGS
from asa.models.family import pretrain_model_sections

__all__ = ["ENTRY_POINTS", "compose_config", "config_path", "describe_compose_error", "load_config"]

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
    checks.register(entry)
    return f"pkg://asa.configs.{entry}"


def compose_config(name: str = "pretrain", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose an entry point's config as its command line would (for notebooks and tests), without running it."""
    from hydra import compose, initialize_config_module

    module = config_path(name).removeprefix("pkg://")
    with initialize_config_module(config_module=module, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


_HYDRA_NOISE = ("Set the environment variable HYDRA_FULL_ERROR", "To append to your config", "full_key:",
                "reference_type=", "object_type=", "Traceback", "File \"", "hydra.errors.", "omegaconf.errors.")
_QUOTING = ("LexerNoViableAlt", "token recognition error", "mismatched input", "extraneous input", "no viable")


def _pretraining_with(option: str) -> list[str]:
    """Where asa-pretrain takes ``option``, which no fine-tuning network does: ``method=<name>`` for each registered
    method whose settings have it, ``model=<family>`` for each family whose pretraining model section has it
    (``mask_block``: model=resenc)."""
    if any(option in {f.name for f in dataclasses.fields(cls)} for cls in NETWORK_SETTINGS.values()):
        return []
    methods = [f"method={name}" for name, cls in sorted(registered_methods().items())
               if option in {f.name for f in dataclasses.fields(cls.Settings)}]
    return methods + [f"model={name}" for name, cls in pretrain_model_sections().items()
                      if option in {f.name for f in dataclasses.fields(cls)}]


def describe_compose_error(text: str) -> str:
    """Hydra's multi-line report of a command line that does not compose, as one line, with a hint to
    quote when the parser choked on a value (spaces, non-ASCII characters, brackets)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(_HYDRA_NOISE) and not ln.startswith("^")]
    message = " ".join(kept).split(" Config search path:")[0] or "the command line could not be read"
    key = re.search(r"Could not override '([\w.]+)'", message) or re.search(r"full_key: ([\w.]+)", text)
    if key and (note := compat.old_key(key[1])):
        message += f" — {key[1]} {note}"
    elif key and key[1].startswith("model.") and "is not in struct" in message:  # a fine-tuning model section
        leaf = key[1].removeprefix("model.")
        message += (f" — the network the model preset builds (model.arch) has no option {leaf}; "
                    "its options are the fields of its settings (asa.models.NetworkSettings)")
        if places := _pretraining_with(leaf):  # an option asa-pretrain takes that fine-tuning does not
            message += f"; {leaf} is an option of asa-pretrain's {' or '.join(places)}"
    elif key and key[1].startswith("task.") and "not in" in message:  # a fine-tuning task section
        message += (f" — the task settings chosen (task=<name>, segmentation unless given) have no option "
                    f"{key[1].removeprefix('task.')}; a task's options are the fields of its Settings (asa.api.tasks)")
    if any(marker in text for marker in _QUOTING):
        message += (" — a value with spaces, non-ASCII or special characters must be quoted for Hydra inside the "
                    "shell's quotes, e.g. \"output_dir='runs/my run'\"")
    return message


def load_config(name: str, *overrides: str) -> Any:
    """A job's typed config (``PretrainConfig``, ``FinetuneConfig``, ``PredictConfig`` or
    ``EvaluateConfig``) with the console script's defaults and these ``key=value`` overrides, e.g.
    ``load_config("pretrain", "model=small", "trainer=smoke")``; set its fields as attributes, then
    pass it to ``asa.api.pretrain`` etc. Interpolated values (``trainer.schedule`` follows
    ``optim.schedule``) are resolved here: change such fields together, or pass an override instead.
    Required values left open (``???``, e.g. ``checkpoint`` of predict) must be set before running.
    An override that does not compose raises ``ValueError`` with the console scripts' hints (a renamed
    key's new place, a model option the network lacks)."""
    from hydra.errors import HydraException

    try:
        cfg = compose_config(name, overrides)
    except HydraException as err:
        raise ValueError(describe_compose_error(f"{err}\n{err.__cause__ or ''}")) from None
    checks.check_task_choice(cfg, overrides)
    return OmegaConf.to_object(checks.validate(cfg, name))
