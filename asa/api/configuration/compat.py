"""What earlier versions of asa wrote, read by this one. A saved run config (a run's ``config.yaml``, the config
in its checkpoints) records the version of its layout (``version``: `asa.api.configuration.schema.CONFIG_VERSION`); one of an
earlier version is read through the numbered migrations (`MIGRATIONS`: version k -> k + 1, applied in order),
a record without a version (written before versions were recorded) as version 0, through all of them, each
migrating only the shape it knows (`read_config`, `current_config`; docs/run-folders.md lists the layouts).
Keys that moved or were removed (a command line, a preset or a resumed run naming one is refused naming the
new place) and values that were renamed are listed here too.

"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig

from asa.api.configuration.schema import CONFIG_VERSION, DEFAULT_ARCH
from asa.data.preprocessing import PERCENTILES
from asa.methods import get_method
from asa.models import NETWORK_SETTINGS, RENAMED_NETWORKS
from asa.models.family import DEFAULT_FAMILY, pretrain_model_sections

__all__ = [
    "CARRIED_KEYS", "MIGRATIONS", "MOVED_KEYS", "REMOVED_KEYS", "RENAMED_VALUES", "TASK_KEYS", "added_settings",
    "current_config",
    "current_value", "flatten_keys", "moved_key", "old_key", "old_keys", "read_config", "removed_key", "renamed_value",
    "version_refusal",
]


# keys of earlier versions -> where the setting is now: a command line, a config or a resumed run with
# the old key is refused naming both (`moved_key`). ``section.*`` moves every key under the section
# but those listed on their own (``mae.pos_mode``); words after the new place say what it needs.
MOVED_KEYS = {
    "mae.*": "method.*", "mae.pos_mode": "model.pos_mode", "mae.lr_axis": "model.lr_axis",  # 0.1.0's mae: block
    "sa_swin.*": "method.* (with method=sa_swin)",  # 0.1.0's sa_swin: block
    "method.pos_mode": "model.pos_mode", "method.lr_axis": "model.lr_axis",
    "segmenter.pos_mode": "model.pos_mode", "segmenter.lr_axis": "model.lr_axis",
    "data.size": "data.crop", "data.patch_size": "data.crop",  # the crop edge of pretraining / fine-tuning
}
# a fine-tuning task's own settings, now its ``task`` section (asa.api.tasks.TaskSettings), by the version that
# moved them there: moved keys whose values a saved run config carries to the new place (`current_config`), for
# the task that read them
TASK_KEYS_BY_VERSION = {
    1: {"segmentation": {"data.samples_per_case": "task.samples_per_case", "loss.focal_weight": "task.focal_weight",
                         "loss.focal_beta": "task.focal_beta"},
        "case": {"loss.class_weighted": "task.class_weighted", "loss.regression": "task.regression",
                 "loss.huber_delta": "task.huber_delta", "head.pooling": "task.head.pooling",
                 "head.hidden_dim": "task.head.hidden_dim", "head.dropout": "task.head.dropout"}},
    5: {"segmentation": {"validation.overlap": "task.overlap", "validation.sw_batch_size": "task.sw_batch_size"},
        "case": {"data.target": "task.target", "data.target_kind": "task.target_kind", "data.targets": "task.targets",
                 "data.classes": "task.classes", "validation.crops": "task.crops"}},
}
TASK_KEYS = {task: {old: new for moved in TASK_KEYS_BY_VERSION.values() for old, new in moved.get(task, {}).items()}
             for task in ("segmentation", "case")}
MOVED_KEYS |= {old: f"{new} (with task={task})" for task, moved in TASK_KEYS.items() for old, new in moved.items()}
MOVED_KEYS |= {"loss.*": "task.*", "head.*": "task.head.*"}
# the segmentation task's settings added with nnU-Net's sampling and Dice, at what a run saved before them trained
# with: crops on any labelled voxel (2/3 of them), Dice over the background too
SEGMENTATION_BEFORE = {"sampling": "foreground", "foreground_fraction": None, "dice_background": True}
# the segmentation task's setting added with nnU-Net's per-batch forced share: a run saved before it forced each crop
# with the share's probability
OVERSAMPLING_BEFORE = {"oversampling": "crop"}
# the masking of a model=resenc pretraining run written before nnssl's (mask block = total stride, asa's densify,
# one attentive weight per block): what a run lacking these settings trained with
MASKING_BEFORE = {"mask_block": None, "densify": "asa", "weight_patch": None}
# the SW-ViT U-Net's decoder options, now its network settings (asa.models.SWViTUNetSettings): moved keys whose
# values a saved run config carries to the new place (`current_config`), for the network that read them
CARRIED_KEYS = {"segmenter.feature_size": "model.feature_size", "segmenter.input_skip": "model.input_skip",
                "segmenter.spe_frame": "model.spe_frame"}
MOVED_KEYS |= CARRIED_KEYS
# a masked CNN's masking and ASA's symmetry options, the network's since version 7 (asa-pretrain's model section,
# as model.coord_channel is in fine-tuning): where a model=resenc pretraining's method section held them
NETWORK_MASKING = ("mirror_visible", "coord_channel", "mask_block", "densify", "weight_patch", "weight_power")
MOVED_KEYS |= {f"method.{key}": f"model.{key} (with model=resenc)" for key in NETWORK_MASKING}


# values renamed since 0.1.0, per dotted key: a run folder written before resumes under the new value,
# a command line or preset giving the old one is refused naming the new (`renamed_value`)
RENAMED_VALUES: dict[str, dict[str, str]] = {"model.arch": RENAMED_NETWORKS}


def current_value(key: str, value: Any) -> Any:
    """``value`` of the dotted ``key`` under its name now (`RENAMED_VALUES`), else as it is."""
    renamed = RENAMED_VALUES.get(key, {})
    return renamed.get(value, value) if isinstance(value, str) else value


def current_config(saved: Any) -> dict[str, Any]:
    """A run config written by this or an earlier asa as this version reads it (see `read_config`)."""
    return read_config(saved)[0]


def added_settings(saved: Any) -> dict[str, Any]:
    """The settings of a saved run config's network (``model``) and pretraining method (``method``) that were
    added since it was written, dotted, each with the value this version gives it: the one that run built with
    (see `read_config`)."""
    return read_config(saved)[1]


def _with_defaults(section: Mapping[str, Any], settings: Any, prefix: str, added: dict[str, Any]) -> dict[str, Any]:
    """``section`` with every field of the ``settings`` instance it lacks at that instance's value (recorded in
    ``added`` under ``prefix.field``)."""
    defaults = {f.name: getattr(settings, f.name) for f in fields(settings)}
    added |= {f"{prefix}.{k}": v for k, v in defaults.items() if k not in section}
    return {**defaults, **section}


def _method_settings(name: Any) -> Any:
    """The default settings of the registered pretraining method ``name`` (None: not one)."""
    try:
        return get_method(str(name)).Settings()
    except Exception:  # an unknown or unregistered name: the run's own checks refuse it, not this reading
        return None


def _move_task_keys(cfg: dict[str, Any], moved: Mapping[str, Mapping[str, str]]) -> None:
    """In place: the settings of a fine-tuning run config's task (the one its ``task`` section names, else
    segmentation, or case for ``data.task=case``) from their old places in ``moved`` (task -> old key -> new
    key) into ``task`` (a value the section holds already stays); the old places of every task's settings
    are left out (another task's never configured the run), and a section left empty with them."""
    held = [old for keys in moved.values() for old in keys
            if isinstance(node := cfg.get(old.split(".")[0]), Mapping) and old.split(".")[1] in node]
    data = cfg.get("data")
    if not isinstance(data, Mapping) or not held:
        return
    task = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else {}
    name = task.get("name") or ("case" if data.get("task") == "case" else "segmentation")
    settings: dict[str, Any] = copy.deepcopy({"name": name, **task})
    for old, new in moved.get(name, {}).items():
        section, leaf = old.split(".")
        node = cfg.get(section)
        if isinstance(node, Mapping) and leaf in node:
            place = settings
            for part in new.split(".")[1:-1]:  # task.head.pooling: the head subsection
                place = place.setdefault(part, {})
            place.setdefault(new.split(".")[-1], node[leaf])
    for section in {old.split(".")[0] for old in held}:
        leaves = {old.split(".")[1] for old in held if old.startswith(section + ".")}
        kept = {k: v for k, v in cfg[section].items() if k not in leaves}
        if kept or section == "data":
            cfg[section] = kept
        else:
            cfg.pop(section)
    cfg["task"] = settings


def _is_outputs_record(node: Any) -> bool:
    """Whether a saved ``task`` is an earlier version's record of what a checkpoint predicts: a
    segmentation task's (its ``channels``) or a case head's (its ``kind``)."""
    return isinstance(node, Mapping) and ("channels" in node or "kind" in node)


# --- the migrations: version k -> k + 1, each in place on a run config of version k ---------------------------
def _task_section(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """0 -> 1: a fine-tuning task's own settings become its ``task`` section (`TASK_KEYS_BY_VERSION`: from
    ``data.samples_per_case``, ``loss.*``, ``head.*``), and the record of what the checkpoint predicts, which
    ``task`` held, becomes ``outputs``."""
    if _is_outputs_record(cfg.get("task")) and "outputs" not in cfg:
        cfg["outputs"] = cfg.pop("task")
    if "task" in cfg:
        return
    _move_task_keys(cfg, TASK_KEYS_BY_VERSION[1])
    if "task" in cfg:
        cfg.pop("loss", None)
        cfg.pop("head", None)


# what migration 1 -> 2 reads of the networks, frozen as it was written (a network registered or changed later does
# not change what a version-1 record means): the network a model section naming none built, and each network's
# model-section fields with whether it follows its pretraining file (then it read the segmenter's decoder options)
V2_DEFAULT_ARCH = "swvit_unetr"
_SWVIT_FIELDS = ("arch", "pretrained", "patch_size", "embed_dim", "depth", "num_heads", "window_size", "mlp_ratio",
                 "shift_mask", "rel_pos_bias", "grad_checkpointing", "region_attention", "saca", "pos_mode", "lr_axis",
                 "dropout")
_SWIN_FIELDS = ("arch", "pretrained", "feature_size", "depths", "num_heads", "window_size", "drop_rate",
                "attn_drop_rate", "dropout_path_rate", "use_checkpoint")
_VIT_FIELDS = ("arch", "pretrained", "hidden_size", "mlp_dim", "num_heads", "proj_type", "dropout_rate", "qkv_bias")
V2_NETWORKS: Mapping[str, tuple[bool, frozenset[str]]] = {  # arch -> (follows its pretraining, model fields)
    "unetr": (False, frozenset(_VIT_FIELDS + ("feature_size", "norm_name", "conv_block", "res_block"))),
    "swin_unetr": (False, frozenset(_SWIN_FIELDS + ("norm_name",))),
    "swvit_unetr": (True, frozenset(_SWVIT_FIELDS + ("feature_size", "input_skip", "spe_frame"))),
    "case_head": (True, frozenset(_SWVIT_FIELDS)),
    "sa_swin": (False, frozenset(_SWIN_FIELDS + ("norm_name", "lr_axis", "symmetry_heads", "symmetry_mlp_ratio"))),
    "vit_case": (False, frozenset(_VIT_FIELDS + ("patch_size", "num_layers", "pos_embed_type"))),
    "swin_case": (False, frozenset(_SWIN_FIELDS + ("patch_size",))),
    "dynunet": (False, frozenset(("arch", "pretrained", "spacing", "deep_supervision", "res_block", "kernel_size",
                                  "strides", "filters"))),
    "resenc": (False, frozenset(("arch", "pretrained", "size", "deep_supervision", "coord_channel", "lr_axis"))),
}


def _network_settings(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """1 -> 2: a fine-tuning ``model`` section (one beside a ``segmenter`` section) holds its network's own
    settings: the decoder options its ``segmenter`` section held (`CARRIED_KEYS`: a network that follows its
    pretraining read them; any other never did, so they are left out), and not the null symmetry settings
    earlier versions stated for every network (a network without them was never handed them). The networks are
    read as this migration knew them (`V2_NETWORKS`); another network's section is left as it is."""
    model, segmenter = cfg.get("model"), cfg.get("segmenter")
    if not (isinstance(segmenter, Mapping) and isinstance(model, Mapping)):
        return
    follows, names = V2_NETWORKS.get(model.get("arch", V2_DEFAULT_ARCH), (False, None))
    taken = names if names is not None and follows else frozenset()
    carried = {place.split(".")[1]: segmenter[old.split(".")[1]] for old, place in CARRIED_KEYS.items()
               if old.split(".")[1] in segmenter and place.split(".")[1] in taken}
    cfg["segmenter"] = {k: v for k, v in segmenter.items() if f"segmenter.{k}" not in CARRIED_KEYS}
    model = {**model, **carried}
    if names is not None:
        model = {k: v for k, v in model.items() if k in names or v is not None}
    cfg["model"] = model


def _segmentation_sampling(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """2 -> 3: a segmentation ``task`` section gets the sampler and Dice settings the run trained with before
    nnU-Net's became the default (`SEGMENTATION_BEFORE`)."""
    task = cfg.get("task")
    if isinstance(task, Mapping) and task.get("name") == "segmentation":
        cfg["task"] = {**SEGMENTATION_BEFORE, **task}


def _resenc_masking(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """3 -> 4: a model=resenc pretraining ``method`` section gets the masking it trained with before nnssl's
    (`MASKING_BEFORE`), said as settings added since."""
    model, method = cfg.get("model"), cfg.get("method")
    if isinstance(method, Mapping) and isinstance(model, Mapping) and model.get("arch") == "resenc":
        before = {k: v for k, v in MASKING_BEFORE.items() if k not in method}
        added |= {f"method.{k}": v for k, v in before.items()}
        cfg["method"] = {**method, **before}


def _task_validation_and_target(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """4 -> 5: a task's validation settings (``validation.*``) and the case task's target (``data.target``,
    ``data.target_kind``, ``data.targets``, ``data.classes``) move into its ``task`` section
    (`TASK_KEYS_BY_VERSION`)."""
    _move_task_keys(cfg, TASK_KEYS_BY_VERSION[5])


def _segmentation_oversampling(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """5 -> 6: a segmentation ``task`` section gets the per-crop forced share it trained with before nnU-Net's
    per-batch one became the default (`OVERSAMPLING_BEFORE`). Its crops were then placed on a lattice of up to 8
    voxels for a network without a patch lattice; they are now placed at any voxel (nnU-Net's crops), which is
    no setting: such a run resumed draws its remaining crops at any voxel."""
    task = cfg.get("task")
    if isinstance(task, Mapping) and task.get("name") == "segmentation":
        cfg["task"] = {**OVERSAMPLING_BEFORE, **task}


def _network_masking(cfg: dict[str, Any], added: dict[str, Any]) -> None:
    """6 -> 7: a pretraining run's masking and symmetry options (`NETWORK_MASKING`) leave its ``method`` section:
    into the ``model`` section of a network that names its arch (``model=resenc``, a plug-in's family: the
    method handed them to that network), dropped for the SW-ViT (a model section naming no arch, or ``swvit``,
    whose network never took them: they were at their defaults). Settings said as added since move with them."""
    model, method = cfg.get("model"), cfg.get("method")
    if not (isinstance(method, Mapping) and isinstance(model, Mapping)):
        return
    held = {k: method[k] for k in NETWORK_MASKING if k in method}
    cfg["method"] = {k: v for k, v in method.items() if k not in held}
    network = model.get("arch", "swvit") != "swvit"  # the SW-ViT sizes name no arch (or swvit, the family)
    if network:
        cfg["model"] = {**model, **{k: v for k, v in held.items() if k not in model}}
    for key in NETWORK_MASKING:
        if f"method.{key}" in added:
            value = added.pop(f"method.{key}")
            if network:
                added[f"model.{key}"] = value


MIGRATIONS = (_task_section, _network_settings, _segmentation_sampling, _resenc_masking, _task_validation_and_target,
              _segmentation_oversampling, _network_masking)
assert len(MIGRATIONS) == CONFIG_VERSION  # one migration per version since the first


def version_refusal(version: Any) -> str | None:
    """Why a saved run config whose ``version`` is ``version`` cannot be read (None: it can): a whole number
    above `CONFIG_VERSION` was written by a newer asa; anything else that is not a whole number from 0 up
    (``five``, ``-1``, ``2.5``, ``true``) is no version asa writes, so the record is unreadable."""
    if isinstance(version, int) and not isinstance(version, bool):
        if 0 <= version <= CONFIG_VERSION:
            return None
        if version > CONFIG_VERSION:
            return (f"version: {version} is newer than this asa reads (versions 0 to {CONFIG_VERSION}): a newer asa "
                    "wrote it; use that asa")
    return (f"version: {version!r} is unreadable: asa writes a whole number from 0 to {CONFIG_VERSION} there, so the "
            "file was edited or damaged; restore the version it was written with")


def read_config(saved: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run config written by this or an earlier asa (a resumed run's, a checkpoint's) as this version reads
    it: renamed values under their names now (`RENAMED_VALUES`), the migrations after its ``version`` (none
    recorded: 0) applied in order (`MIGRATIONS`), then a fine-tuning ``model`` section with each setting its
    network gained since at its default, and a pretraining ``method`` section with each setting its method
    gained since at its default, and a pretraining ``model`` section naming its arch with each setting its
    family's section gained since at its default: what that run built and trained with (a run written before
    model=resenc's symmetry options lacks ``model.coord_channel`` and ``model.mirror_visible``: off, as it was).
    A version newer than this asa's, or one that is no version, is refused (``ValueError``: `version_refusal`,
    naming no file: the caller names it). Returns (the config at `CONFIG_VERSION`, a copy, the rest as it is;
    the settings added since, dotted key -> value)."""
    cfg = copy.deepcopy(dict(saved))
    added: dict[str, Any] = {}
    version = cfg.pop("version", 0)
    if (why := version_refusal(version)) is not None:
        raise ValueError(why)
    for key in RENAMED_VALUES:  # dotted keys of a section: "model.arch"
        section, leaf = key.split(".")
        if isinstance(node := cfg.get(section), Mapping) and leaf in node:
            cfg[section] = {**node, leaf: current_value(key, node[leaf])}
    for migrate in MIGRATIONS[version:]:
        migrate(cfg, added)
    data = cfg.get("data")
    if isinstance(cfg.get("task"), Mapping) and isinstance(data, Mapping) and "percentiles" not in data:
        # a fine-tuning run saved before data.percentiles clipped at its default, the only clip there was
        cfg["data"] = {**data, "percentiles": list(PERCENTILES)}
        added["data.percentiles"] = list(PERCENTILES)
    model = cfg.get("model")
    if isinstance(cfg.get("segmenter"), Mapping) and isinstance(model, Mapping):
        arch = model.get("arch", DEFAULT_ARCH)
        if (cls := NETWORK_SETTINGS.get(arch)) is not None:
            cfg["model"] = _with_defaults(model, cls(arch=arch), "model", added)
    method = cfg.get("method")
    if isinstance(method, Mapping) and (settings := _method_settings(method.get("name"))) is not None:
        cfg["method"] = _with_defaults(method, settings, "method", added)
        arch = model.get("arch", DEFAULT_FAMILY) if isinstance(model, Mapping) else DEFAULT_FAMILY
        if arch != DEFAULT_FAMILY and (section := pretrain_model_sections().get(arch)) is not None:
            cfg["model"] = _with_defaults(model, section(), "model", added)  # the SW-ViT's sizes are left as read
    return {"version": CONFIG_VERSION, **cfg}, added


def renamed_value(key: str, value: Any) -> str | None:
    """Why ``key=value`` is refused when ``value`` was renamed since 0.1.0 (None: it was not)."""
    new = current_value(key, value)
    return None if new == value else f"{key}={value}: renamed; it is now {key}={new}"


def moved_key(key: str) -> str | None:
    """Where the setting of an earlier version's dotted ``key`` is now (None: not a moved key), e.g.
    ``mae.loss_weighting`` -> ``method.loss_weighting``; a moved section names its exceptions too."""
    if key in MOVED_KEYS:
        return MOVED_KEYS[key]
    if key + ".*" in MOVED_KEYS:
        own = [f"{k}: {v}" for k, v in MOVED_KEYS.items() if k.startswith(key + ".") and not k.endswith(".*")]
        return MOVED_KEYS[key + ".*"] + (f" ({', '.join(own)})" if own else "")
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        section = ".".join(parts[:n])
        if section + ".*" in MOVED_KEYS:
            place, _, needs = MOVED_KEYS[section + ".*"].partition(" ")
            return place.removesuffix(".*") + key[len(section):] + (f" {needs}" if needs else "")
    return None


# keys of earlier versions that are gone -> what took their place. Refused as a moved key is (a command
# line, ``+key``, a preset: `old_key`); a saved run config that holds one (a resumed run, a checkpoint)
# is read without it, said in one line. Only keys that never changed a number belong here: method.in_channels built
# the masked network's stem, whose input is the data's channels, so a run that took a step had it at
# len(data.channels), the count that network is built with now (a saved run of either resumes).
REMOVED_KEYS = {
    "method.in_channels": "the masked network's input channels are the data's: list them in data.channels "
                          "(data.channels=[t1,t2] builds 2 input channels)",
    "data.cache_dir": "the store is the one preprocessing cache: write one with asa-preprocess (the same data "
                      "options and data.store=DIR), then train with data.store=DIR",
}


def removed_key(key: str) -> str | None:
    """What took the place of an earlier version's removed dotted ``key`` (None: not a removed key)."""
    return REMOVED_KEYS.get(key)


def old_key(key: str) -> str | None:
    """What a refusal says of an earlier version's dotted ``key``: ``is now <place>`` (`moved_key`) or
    ``was removed; <what took its place>`` (`removed_key`); None for any other key."""
    if (place := moved_key(key)) is not None:
        return f"is now {place}"
    if (instead := removed_key(key)) is not None:
        return f"was removed; {instead}"
    return None


def flatten_keys(node: Any) -> list[str]:
    """The dotted keys of a mapping's leaves (``{"a": {"b": 1}}`` -> ``["a.b"]``; a leaf: none)."""
    if not isinstance(node, (dict, DictConfig)):
        return []
    return [f"{k}.{sub}" if sub else str(k) for k, v in node.items() for sub in (flatten_keys(v) or [""])]


def old_keys(keys: Any) -> dict[str, str]:
    """The moved or removed ones among dotted ``keys``, each with what its refusal says (`old_key`)."""
    return {key: note for key in keys if (note := old_key(key)) is not None}
