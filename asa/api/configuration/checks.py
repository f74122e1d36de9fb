"""A composed config checked against the schemas (`asa.api.configuration.schema`) and typed by them: `entry_store`
stores the schemas and their groups in Hydra's ConfigStore while an entry point composes (`register`), so Hydra
checks every preset and every ``key=value`` while composing: an unknown key (``trainer.epocs=3``), a wrong type
(``trainer.epochs=ten``) or a preset of the other entry point fails before anything runs, with a message naming
the key. `validate` repeats the check on a composed config, which also catches keys added with ``+key=value``, and
refuses a value outside the choices a field declares with `asa.choices.one_of` (naming the dotted key); a
fine-tuning ``model`` or ``task`` section is typed by the settings of the network or task it names
(`network_settings`, `task_settings`). `as_config` gives the typed config a job runs on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from asa.api.configuration.compat import RENAMED_VALUES, flatten_keys, old_keys, renamed_value
from asa.api.configuration.schema import (CONFIG_VERSION, DEFAULT_ARCH, PRETRAIN_MODELS, SCHEMAS, PretrainConfig,
                                          pretrain_family)
from asa.api.configuration.tasks import TaskSettings, registered_tasks, task_class
from asa.choices import check_choices
from asa.data.preprocessing import check_percentiles
from asa.methods import MethodSettings, get_method, registered_methods
from asa.models import NETWORK_SETTINGS, PRESETS, EncoderOptions, NetworkSettings

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "DEFAULT_TASK", "as_config", "check_task_choice", "entry_store", "network_settings", "pretrain_model_node", "register",
    "settings_class", "task_settings", "validate",
]


DECODER_KEYS = ("decoder_dim", "decoder_depth", "decoder_num_heads")
NOT_SIZES = ("pos_mode", "lr_axis")  # encoder settings that the model=tiny|small|base presets leave alone


def _schema_node(entry: str, method: str | None = None) -> Any:
    """The schema an entry point's config is checked against; for pretraining, with the settings of
    ``method`` (None: the bare method base, which the ``method`` group's choice fills in)."""
    if entry != "pretrain":
        return SCHEMAS[entry]()
    return PretrainConfig(method=MethodSettings() if method is None else get_method(method).Settings())


# the store's nodes as `register` built them, by what it was given to build them from (`_node_key`): Hydra converts
# each schema and preset as it stores it, a third of a composition's time, while they change only when something
# registers or a default changes
_BUILT: dict[tuple, dict[str, Any]] = {}


def register(entry: str = "finetune", folder: Traversable | None = None) -> None:
    """Store, in Hydra's ConfigStore, each schema as ``<entry>_schema``, each pretraining method's settings as an
    option of the ``method`` group, each task's as one of ``task`` and ``entry``'s own ``model=<arch>`` options
    (the methods, tasks and networks registered by then count); ``folder``: the entry point's config folder, whose
    ``model`` preset files take precedence (`_model_presets`). Called inside `entry_store`, which gives the store
    back as it was once the composition is done, so that each entry point composes its own store. Nodes built from
    the same values (`_node_key`) are converted once and stored again as built: Hydra hands out a copy of a stored
    node, never the node."""
    store = ConfigStore.instance()
    nodes = _nodes(entry, folder)
    key = _node_key(nodes)
    if key not in _BUILT:
        held, store.repo = store.repo, {}
        try:
            for group, name, node in nodes:
                store.store(group=group, name=name, node=node)
            _BUILT[key] = store.repo
        finally:
            store.repo = held
    _add_nodes(store.repo, _BUILT[key])


def _node_key(nodes: list[tuple[str | None, str, Any]]) -> tuple:
    """The nodes as `register` stores them, by value: each one's group, name, type and repr (a settings dataclass's
    repr names every field's value, those its default factories gave included)."""
    return tuple((group, name, type(node), repr(node)) for group, name, node in nodes)


def _add_nodes(repo: dict[str, Any], nodes: dict[str, Any]) -> None:
    """``nodes`` (a store's groups, nested, and their nodes) into ``repo``, as `ConfigStore.store` adds them: a node
    replaces one of its name, a group keeps what else it held; ``repo``'s groups stay its own dicts."""
    for name, node in nodes.items():
        if isinstance(node, dict):
            _add_nodes(repo.setdefault(name, {}), node)
        else:
            repo[name] = node


def _nodes(entry: str, folder: Traversable | None) -> list[tuple[str | None, str, Any]]:
    """`register`'s nodes, each as ``(group, name, node)`` for `ConfigStore.store`, not yet converted."""
    nodes: list[tuple[str | None, str, Any]] = []
    for name in SCHEMAS:
        node = _schema_node(name)
        if name == "pretrain":  # the model section's keys depend on its arch: `validate` types it
            node.model = {}
        nodes.append((None, f"{name}_schema", node))
    for name, method in registered_methods().items():
        nodes.append(("method", name, method.Settings(name=name)))
    for name, task in registered_tasks().items():  # task=<name>: a fine-tuning task's settings at their defaults
        nodes.append(("task", name, task.Settings(name=name)))
    # model=<preset>: a network's settings at their defaults, as a mapping: `validate` types the section by the
    # network it names, so a preset or experiment setting an option the network lacks is refused naming it
    for arch, settings in NETWORK_SETTINGS.items():
        nodes.append(("network", arch, asdict(settings(arch=arch))))
    for arch, settings in PRETRAIN_MODELS.items():  # asa-pretrain's model presets start from these defaults
        nodes.append(("pretrain_network", arch, asdict(settings())))
    # model=<arch> with no preset file, a plug-in's too: asa-finetune's every network with settings, asa-pretrain's
    # every family with a masked twin (`asa.models.family.Family.masked`), at their defaults; the other entry
    # point's are not in this store (nor in those of the entry points with no model group): --help lists what the
    # entry point takes
    own = {"finetune": {arch: asdict(settings(arch=arch)) for arch, settings in NETWORK_SETTINGS.items()},
           "pretrain": {arch: asdict(settings()) for arch, settings in PRETRAIN_MODELS.items()}}.get(entry, {})
    presets = _model_presets(folder)
    for arch, node in own.items():
        if arch not in presets:
            nodes.append(("model", arch, node))
    for name, sizes in PRESETS.items():  # model=tiny|small|base: the encoder and, for pretraining, the decoder
        encoder = asdict(EncoderOptions(**{k: v for k, v in sizes.items() if k not in DECODER_KEYS}))
        sized = {k: v for k, v in encoder.items() if k not in NOT_SIZES}
        nodes.append(("sizes/encoder", name, sized))  # a mapping: fine-tuning adds arch
        nodes.append(("sizes/decoder", name, {k: sizes[k] for k in DECODER_KEYS}))
    return nodes


@contextmanager
def entry_store(entry: str, folder: Traversable | None = None) -> Iterator[None]:
    """Hydra's ConfigStore as ``entry`` composes with it, for the time of the block: the store as the process holds
    it (what a plug-in stored there included) with `register`'s nodes for ``entry`` added (``folder``: its config
    folder, `asa.api.config.config_folder`); on leaving, Hydra's singletons, the store among them, are set back to
    their state before the block by Hydra's own ``Singleton.get_state``/``set_state``. The store is one per
    process: kept apart so, asa-pretrain's and asa-finetune's ``model=<arch>`` options, which share the group's
    name, compose in any order, and each entry point's --help lists its own."""
    before = Singleton.get_state()
    try:
        register(entry, folder)
        yield
    finally:
        Singleton.set_state(before)


def _model_presets(folder: Traversable | None) -> set[str]:
    """The names of the ``model`` preset files in an entry point's config folder (``configs/<entry>/model/*.yaml``):
    a network's own ``model=<arch>`` option is stored only where no file has its name (a file and a stored node of
    one name would be merged by Hydra, the stored one as the file's schema)."""
    presets = None if folder is None else folder / "model"
    if presets is None or not presets.is_dir():
        return set()
    return {p.name.removesuffix(".yaml") for p in presets.iterdir() if p.name.endswith(".yaml")}


def _arch(model: Any) -> str:
    return model.arch if isinstance(model, NetworkSettings) else model.get("arch", DEFAULT_ARCH)


def settings_class(model: Any) -> type[NetworkSettings]:
    """The settings class registered with the network a fine-tuning ``model`` section names
    (``arch``; none: `DEFAULT_ARCH`); a renamed, unknown or unconfigurable one is refused naming it."""
    arch = _arch(model)
    if (why := renamed_value("model.arch", arch)) is not None:
        raise ValueError(why)
    if arch not in NETWORK_SETTINGS:
        raise ValueError(f"model.arch={arch}: no network of that name takes a run config's model section; expected one "
                         f"of {', '.join(NETWORK_SETTINGS)}")
    return NETWORK_SETTINGS[arch]


def network_settings(model: Any) -> NetworkSettings:
    """A fine-tuning ``model`` section (a mapping, a config node or a `NetworkSettings`) as the typed settings
    of the network it names, every field it leaves out at its default: a key the network does not take, a
    value of the wrong type or outside a field's choices is refused naming ``model.<key>``."""
    cls, arch = settings_class(model), _arch(model)
    if isinstance(model, NetworkSettings) and type(model) is not cls:  # another network's settings: its fields
        model = asdict(model)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls(arch=arch)), model)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        given = f"model.{key}={OmegaConf.select(OmegaConf.create(model), key, default='?')}"
        if isinstance(err, ConfigKeyError):
            taken = {f.name for f in fields(cls)}
            alien = [k for k in (asdict(model) if is_dataclass(model) else model) if k not in taken]
            if len(alien) > 1:  # another network's preset under model.arch: not options the user typed
                raise ValueError(f"model.arch={arch}: the model section holds another network's options "
                                 f"({', '.join(f'model.{k}' for k in alien[:4])}{', ...' if len(alien) > 4 else ''}, "
                                 f"from its preset); choose the network with model={arch} instead of model.arch") from None
            raise ValueError(f"{given}: model arch {arch!r} has no such option; it takes "
                             f"{', '.join(f.name for f in fields(cls))}") from None
        raise ValueError(f"{given}: {str(err).splitlines()[0]}") from None
    check_choices(typed, cls, "model.")
    return OmegaConf.to_object(typed)


DEFAULT_TASK = "segmentation"  # the ``task`` group's default (configs/{finetune,evaluate,probe}/*.yaml)
TASK_ENTRIES = ("finetune", "evaluate", "probe")  # the entry points whose config has a task section


def task_settings(section: Any, data_task: str) -> TaskSettings:
    """A fine-tuning ``task`` section (a mapping, a config node or a `TaskSettings`) as the typed settings of
    the task that claims ``data_task`` (`asa.api.tasks.task_class`), every field it leaves out at its
    default. The ``task`` group's default (`DEFAULT_TASK`) at its defaults, left alone while ``data.task``
    chose another task, gives the claiming task's defaults; another task's section (``task=case`` with
    ``data=brats``) is refused; a key the task
    does not take, a value of the wrong type or outside a field's choices is refused naming ``task.<key>``."""
    cls = task_class(data_task)
    section = asdict(section) if is_dataclass(section) else dict(OmegaConf.to_container(section, resolve=True)
                                                                 if isinstance(section, DictConfig) else section or {})
    named = section.get("name", cls.name)
    if named != cls.name:
        other = registered_tasks().get(named)
        if named != DEFAULT_TASK or other is None or section != asdict(other.Settings(name=named)):
            raise ValueError(f"task.name={named}: data.task={data_task} is trained by task {cls.name}, whose settings "
                             f"are chosen with task={cls.name} (the task section holds task {named}'s)")
        section = {}
    section["name"] = cls.name
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls.Settings(name=cls.name)), section)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        given = f"task.{key}={OmegaConf.select(OmegaConf.create(section), key, default='?')}"
        if isinstance(err, ConfigKeyError):
            raise ValueError(f"{given}: task {cls.name} has no such option; it takes "
                             f"{', '.join(f.name for f in fields(cls.Settings) if f.name != 'name')}") from None
        raise ValueError(f"{given}: {str(err).splitlines()[0]}") from None
    check_choices(typed, cls.Settings, "task.")
    return OmegaConf.to_object(typed)


def check_task_choice(cfg: Any, overrides: Sequence[str]) -> None:
    """Refuse a fine-tuning command line that chooses the settings of a task other than the one that claims
    ``data.task`` (``data=targets task=segmentation``): those settings would give way to the claiming task's
    without a word (`task_settings` cannot tell a chosen default from the group's default)."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == "task" and "=" in o]
    data_task = OmegaConf.select(cfg, "data.task", default=None) if "task" in cfg else None
    if not chosen or data_task is None:
        return
    cls = task_class(str(data_task))
    if chosen[-1] != cls.name:
        raise ValueError(f"task={chosen[-1]}: data.task={data_task} is trained by task {cls.name}; choose "
                         f"task={cls.name} or leave task= out")


def pretrain_model_node(model: Any) -> Any:
    """The schema of a pretraining ``model`` section: the SW-ViT sizes, or the settings of the network its
    ``arch`` names; an unknown arch is refused naming it."""
    arch = pretrain_family(model)
    if arch not in PRETRAIN_MODELS:
        raise ValueError(f"model.arch={arch}: asa-pretrain pretrains {', '.join(PRETRAIN_MODELS)}: the families "
                         "that declare a masked twin (asa.models.family.Family's masked)")
    return PRETRAIN_MODELS[arch]()


def validate(cfg: DictConfig, entry: str) -> DictConfig:
    """Check a composed config against the entry point's schema again (catches ``+key=value``
    additions, which Hydra lets through); raises ``ValueError`` naming the key. Returns the config
    typed by the schema (a fine-tuning ``model`` section: by its network's settings)."""
    method = None
    if entry == "pretrain":
        method = OmegaConf.select(cfg, "method.name", default=None)
        if not isinstance(method, str):
            raise ValueError("asa-pretrain: invalid option method: pick a pretraining method with method=<name> "
                             f"(one of {', '.join(sorted(registered_methods()))})")
    for key in RENAMED_VALUES:
        if (why := renamed_value(key, OmegaConf.select(cfg, key, default=None))) is not None:
            raise ValueError(f"asa-{entry}: invalid option {why}")
    try:
        node = _schema_node(entry, method)
    except ValueError as err:
        raise ValueError(f"asa-{entry}: invalid option {err}") from None
    task = None
    if entry in TASK_ENTRIES:  # the task section: the settings of the task that claims data.task (task.<key>)
        data_task = OmegaConf.select(cfg, "data.task", default=None)
        try:
            task = None if data_task is None else task_settings(cfg.get("task"), str(data_task))
        except ValueError as err:
            raise ValueError(f"asa-{entry}: invalid option {err}") from None
        node = SCHEMAS[entry](task=TaskSettings() if task is None else type(task)(name=task.name))
    if entry == "finetune":  # the model section: its network's settings (refused naming model.<key>)
        model = network_settings(cfg.model)
        node.model = type(model)(arch=model.arch)
    elif entry == "pretrain":  # the model section: the SW-ViT sizes or the settings its arch names
        try:
            node.model = pretrain_model_node(cfg.get("model"))
        except ValueError as err:
            raise ValueError(f"asa-pretrain: invalid option {err}") from None
    schema = OmegaConf.structured(node)
    OmegaConf.set_struct(schema, True)
    given = OmegaConf.to_container(cfg, resolve=False)
    if task is not None:  # the task section as the claiming task reads it (checked above)
        given["task"] = asdict(task)
        cfg = OmegaConf.create(given)
    try:
        typed = OmegaConf.merge(schema, given)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        keys = flatten_keys(OmegaConf.select(cfg, key)) if key in cfg else {}
        old = old_keys([f"{key}.{k}" for k in keys]) or old_keys([key])
        if old:
            raise ValueError(f"asa-{entry}: invalid option {key}: "
                             + "; ".join(f"{name} {note}" for name, note in old.items())) from None
        raise ValueError(f"asa-{entry}: invalid option {key}: {err.msg if hasattr(err, 'msg') else err}") from None
    check_choices(cfg, node)
    output_dir = OmegaConf.select(typed, "output_dir", default=None)
    if isinstance(output_dir, str) and not output_dir.strip():  # would be the working folder
        raise ValueError(f"asa-{entry}: invalid option output_dir={output_dir!r}: empty; name the folder the run "
                         "writes in (output_dir=runs/NAME), which it creates")
    for key, what in (("data.root", "the dataset's folder"), ("data.store", "the store's folder")):
        value = OmegaConf.select(typed, key, default=None)
        if isinstance(value, str) and not value.strip():  # would be the working folder too
            optional = "" if (entry, key) == ("preprocess", "data.store") else f" or leave {key} out (null)"
            raise ValueError(f"asa-{entry}: invalid option {key}={value!r}: empty; name {what} ({key}=PATH){optional}")
    crop = OmegaConf.select(typed, "data.crop", default=None)
    if isinstance(crop, int) and crop < 1:  # a network built on it fails in torch's words
        raise ValueError(f"asa-{entry}: invalid option data.crop={crop}: expected the crop's edge in voxels, a "
                         "positive whole number (e.g. data.crop=96)")
    percentiles = OmegaConf.select(typed, "data.percentiles", default=None)
    if percentiles is not None:  # a fine-tuning data section's clip (two numbers, 0 <= low < high <= 100)
        try:
            check_percentiles(list(percentiles), "data.percentiles")
        except ValueError as err:
            raise ValueError(f"asa-{entry}: invalid option {err}") from None
    if entry in ("pretrain", "finetune") and typed.version != CONFIG_VERSION:
        raise ValueError(f"asa-{entry}: invalid option version={typed.version}: the layout version of a run config "
                         f"is this asa's ({CONFIG_VERSION}), which it records; a saved config of an earlier version is "
                         "read through asa.api.configuration.compat's migrations")
    return typed


def as_config(config: Any, entry: str) -> Any:
    """The typed config a job runs on: the entry point's dataclass (``PretrainConfig``, ...) from a
    typed config or a composed Hydra config, checked against the schema, every interpolation
    resolved. A required value left open (``???``) is a ``ValueError`` naming it; a config of another
    kind a ``TypeError`` naming what was expected."""
    schema = SCHEMAS[entry]
    if isinstance(config, DictConfig):
        cfg = config
    elif is_dataclass(config) and isinstance(config, schema):
        cfg = OmegaConf.structured(config)
    else:
        raise TypeError(f"asa.api.{entry}: expected an asa.api.{schema.__name__} (e.g. asa.api.load_config({entry!r})) "
                        f"or a composed DictConfig, got {type(config).__name__}")
    typed = validate(cfg, entry)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"asa-{entry}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         f"({' '.join(f'{key}=...' for key in missing)})")
    return OmegaConf.to_object(typed)
