"""Where the Hydra configs live, and composing them as the command line would.

The configs are the top-level ``configs/`` folder, shipped in the wheel as the package ``asa.configs``: one
folder per entry point (``pretrain/``, ``finetune/``, ``predict/``, ``evaluate/``, ...), each with its own config
groups, plus ``common/`` (the trainer base shared by pretraining and fine-tuning, and Hydra's settings) that their
primary configs put on the search path as ``pkg://asa.configs.<folder>``. Installed (a wheel, or an editable
install) Hydra reads them from the package; in a source checkout that is not installed, `config_path` names the
checkout's folder instead and `search_path` the same folders of the checkout in place of those ``pkg://`` ones.
"""
from __future__ import annotations

import dataclasses

import importlib.resources
import importlib.util
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from asa.api.configuration import checks, compat
from asa.methods.base import registered_methods
from asa.models import NETWORK_SETTINGS
from asa.models.family import pretrain_model_sections

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["ENTRY_POINTS", "compose_config", "config_folder", "config_path", "describe_compose_error", "group_options",
           "load_config", "search_path"]

ENTRY_POINTS = ("pretrain", "finetune", "predict", "evaluate", "preprocess", "probe")
_PACKAGE = "asa.configs"
_SOURCE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _installed() -> bool:
    """Whether the package ``asa.configs`` is importable (asa installed); if not, the checkout's ``configs/``
    folder is read. Raises ``FileNotFoundError`` when neither is there."""
    try:
        if importlib.util.find_spec(_PACKAGE) is not None:
            return True
    except ModuleNotFoundError:
        pass
    if not (_SOURCE_CONFIGS / "__init__.py").is_file():
        raise FileNotFoundError(
            f"asa's Hydra configs were not found: neither the package {_PACKAGE} nor {_SOURCE_CONFIGS} exists; "
            "reinstall asa (pip install .)"
        )
    return False


def _check_entry(entry: str) -> None:
    if entry not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {entry!r}; expected one of {ENTRY_POINTS}")


def config_folder(entry: str) -> Traversable:
    """The config folder of one entry point: the package's (installed) or the checkout's ``configs/<entry>``."""
    _check_entry(entry)
    return importlib.resources.files(f"{_PACKAGE}.{entry}") if _installed() else _SOURCE_CONFIGS / entry


def config_path(entry: str) -> str:
    """The config folder of one entry point as Hydra's ``config_path`` takes it: ``pkg://asa.configs.<entry>``
    where asa is installed, else the checkout's ``configs/<entry>`` folder (an absolute path)."""
    _check_entry(entry)
    return f"pkg://{_PACKAGE}.{entry}" if _installed() else str(_SOURCE_CONFIGS / entry)


def search_path(entry: str) -> list[str]:
    """The overrides that put an entry point's search path (its primary config's ``hydra.searchpath``) where
    `config_path` is: none where asa is installed; in a checkout that is not installed, ``hydra.searchpath``
    with each ``pkg://asa.configs.<folder>`` of the primary config as the checkout's ``file://`` folder."""
    if config_path(entry).startswith("pkg://"):
        return []
    primary = OmegaConf.load(_SOURCE_CONFIGS / entry / f"{entry}.yaml")
    given = OmegaConf.select(primary, "hydra.searchpath", default=None)
    if not given:
        return []
    folders = []
    for path in given:
        if path.startswith(f"pkg://{_PACKAGE}."):
            path = f"file://{_SOURCE_CONFIGS.joinpath(*path.removeprefix(f'pkg://{_PACKAGE}.').split('.'))}"
        folders.append("'" + path.replace("'", "\\'") + "'")  # quoted: a folder's name may hold spaces
    return [f"hydra.searchpath=[{','.join(folders)}]"]


@contextmanager
def _hydra(name: str) -> Iterator[None]:
    """Hydra initialised on an entry point's config folder, in its ConfigStore (`checks.entry_store`), for the block."""
    from hydra import initialize_config_dir, initialize_config_module

    path = config_path(name)
    with checks.entry_store(name, config_folder(name)):
        if path.startswith("pkg://"):
            init = initialize_config_module(config_module=path.removeprefix("pkg://"), version_base="1.3")
        else:
            init = initialize_config_dir(config_dir=path, version_base="1.3")
        with init:
            yield


def compose_config(name: str = "pretrain", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose an entry point's config as its command line would (for notebooks and tests), without running it;
    in Hydra's ConfigStore as the entry point composes with it (`checks.entry_store`), left as it was."""
    from hydra import compose

    with _hydra(name):
        return compose(config_name=name, overrides=[*overrides, *search_path(name)])


def group_options(name: str, groups: Sequence[str]) -> dict[str, list[str]]:
    """The options of each of ``groups`` as an entry point's command line finds them: the preset files of its folder
    and its search path, and what asa stores for it (the methods, the tasks, ``model=<arch>``); a file whose name
    starts with ``_`` is a base the presets share, not an option."""
    from hydra.core.global_hydra import GlobalHydra

    with _hydra(name):
        loader = GlobalHydra.instance().config_loader()
        return {group: [o for o in loader.get_group_options(group, config_name=name, overrides=search_path(name))
                        if not o.startswith("_")] for group in groups}


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
