"""Where the configs are read from and the store they compose with: each entry point composes in Hydra's
ConfigStore with its own nodes added for the time of the composition (`asa.api.configuration.checks.entry_store`),
so asa-pretrain's and asa-finetune's ``model=<arch>`` options compose in any order and the store is left as it was;
a checkout that is not installed reads its ``configs/`` folder through file paths (`asa.api.config.config_path`,
`search_path`), with nothing registered in ``sys.modules``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from omegaconf import OmegaConf

from asa.api import config
from asa.api.config import compose_config, config_path, search_path
from asa.api.configuration import checks
from asa.api.configuration.schema import PRETRAIN_MODELS, SCHEMAS
from asa.methods import METHODS, MethodSettings, PretrainingMethod, register_method
from asa.models import NETWORK_SETTINGS


def _model_options(entry: str) -> set[str]:
    """The ``model`` options Hydra lists for an entry point (from the refusal of one it does not have)."""
    with pytest.raises(Exception) as info:
        compose_config(entry, ["model=no_such_model"])
    listed = str(info.value).split("Available options in 'model':")[1].split("Config search")[0]
    return {line.strip() for line in listed.splitlines() if line.strip()}


def test_each_entry_point_lists_its_own_model_options_in_either_order():
    first = {entry: _model_options(entry) for entry in ("pretrain", "finetune", "pretrain")}
    again = {entry: _model_options(entry) for entry in ("finetune", "pretrain", "finetune")}
    assert first == again
    assert first["pretrain"] == {"base", "small", "tiny", *PRETRAIN_MODELS}
    assert first["finetune"] == {"base", "small", "tiny", *NETWORK_SETTINGS}


def test_composing_leaves_the_store_as_it_was_and_keeps_what_others_stored():
    before = Singleton.get_state()
    try:
        store = ConfigStore.instance()
        store.store(group="trainer", name="quick_from_outside", node={"epochs": 1})
        listed = store.list("")
        for entry in ("finetune", "pretrain", "predict"):
            compose_config(entry)
        store = ConfigStore.instance()
        assert store.list("") == listed and "model" not in listed and "pretrain_schema.yaml" not in listed
        cfg = compose_config("finetune", ["trainer=quick_from_outside"])
        assert cfg.trainer.epochs == 1
    finally:
        Singleton.set_state(before)


_STRENGTH = {"default": 0.25}  # a default read when the settings are made, as the Swin sizes' are


@dataclass
class _LaterSettings(MethodSettings):
    strength: float = field(default_factory=lambda: _STRENGTH["default"])


class _Later(PretrainingMethod):
    name, Settings = "registered_between_compositions", _LaterSettings


def test_the_nodes_built_once_compose_as_built_afresh_and_follow_what_is_registered(monkeypatch):
    """`register` stores the nodes it built from the same values: every entry point composes from them as from
    nodes built afresh, a config changed after its composition leaves the next one as it was, a method registered
    between two compositions is an option of the second (gone again once it is removed), and a default changed
    between two compositions is the second's."""
    kept = {entry: OmegaConf.to_yaml(compose_config(entry)) for entry in SCHEMAS}
    changed = compose_config("finetune")
    changed.trainer.epochs, changed.model.arch = 12345, "changed"
    assert OmegaConf.to_yaml(compose_config("finetune")) == kept["finetune"]
    monkeypatch.setattr(checks, "_BUILT", {})
    assert {entry: OmegaConf.to_yaml(compose_config(entry)) for entry in SCHEMAS} == kept
    built = {key: id(nodes) for key, nodes in checks._BUILT.items()}  # built once for each set of values, not again
    assert {entry: OmegaConf.to_yaml(compose_config(entry)) for entry in SCHEMAS} == kept
    assert {key: id(nodes) for key, nodes in checks._BUILT.items()} == built

    with pytest.raises(Exception, match="registered_between_compositions"):
        compose_config("pretrain", ["method=registered_between_compositions"])
    register_method(_Later)
    try:
        cfg = compose_config("pretrain", ["method=registered_between_compositions"])
        assert cfg.method == {"name": "registered_between_compositions", "strength": 0.25}
        monkeypatch.setitem(_STRENGTH, "default", 0.5)  # the registries as they were, another default
        assert compose_config("pretrain", ["method=registered_between_compositions"]).method.strength == 0.5
    finally:
        METHODS.pop("registered_between_compositions")
    with pytest.raises(Exception, match="registered_between_compositions"):
        compose_config("pretrain", ["method=registered_between_compositions"])


def test_a_checkout_that_is_not_installed_composes_the_same_from_its_folder(monkeypatch):
    if not (config._SOURCE_CONFIGS / "__init__.py").is_file():
        pytest.skip("asa installed from a wheel: no checkout configs/ folder")
    installed = {entry: OmegaConf.to_yaml(compose_config(entry)) for entry in ("preprocess", "finetune", "pretrain")}
    monkeypatch.setattr(config, "_installed", lambda: False)  # as if the package asa.configs were not importable
    monkeypatch.delitem(sys.modules, "asa.configs", raising=False)
    assert config_path("preprocess") == str(config._SOURCE_CONFIGS / "preprocess")
    folders = [f"'file://{config._SOURCE_CONFIGS / name}'" for name in ("common", "pretrain", "finetune")]
    assert search_path("preprocess") == [f"hydra.searchpath=[{','.join(folders)}]"]
    checkout = {entry: OmegaConf.to_yaml(compose_config(entry)) for entry in ("preprocess", "finetune", "pretrain")}
    assert checkout == installed and "asa.configs" not in sys.modules
