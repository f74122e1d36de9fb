"""Structured-config schemas of the jobs (typed configs), registered with Hydra's ConfigStore.

Each primary config (``configs/<entry>/<entry>.yaml``) starts its defaults list with its schema,
so Hydra checks every preset and every ``key=value`` against these dataclasses while composing:
an unknown key (``trainer.epocs=3``), a wrong type (``trainer.epochs=ten``) or a preset of the
other entry point fails before anything runs, with a message naming the key. ``validate`` repeats
the check on a composed config, which also catches keys added with ``+key=value``, and refuses a
value outside the choices a field declares with `asa.choices.one_of` (naming the dotted key).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, List, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from asa.data.augmentation import AUGMENT_ON
from asa.data.case_crops import CASE_CROPS, DEFAULT_CASE_CROPS
from asa.data.layouts import LAYOUTS, SEGMENTATION_LAYOUTS
from asa.data.targets import TARGET_KINDS
from asa.data.regions import CONFIG_SOURCES
from asa.data.store import STORE_DTYPES
from asa.eval.metrics import HD95_CONVENTIONS
from asa.choices import check_choices, one_of
from asa.methods import MaskedAutoencoderSettings, MethodSettings, get_method, registered_methods
from asa.models import (DEFAULT_CROP, NETWORK_SETTINGS, PRESETS, RENAMED_NETWORKS, EncoderOptions,
                        EncoderSettings, NetworkSettings)
from asa.models.cnn.resenc import RESENC_SIZES
from asa.models.registry import network_record
from asa.models.swvit.position import POSITION_MODES
from asa.api.task_registry import TaskSettings, registered_tasks, task_class
from asa.train import TrainerSettings
from asa.train.optim import OPTIMIZERS
from asa.train.precision import AMP_CHOICES
from asa.train.schedule import SCHEDULES

__all__ = [
    "DEFAULT_ARCH", "EvaluateConfig", "FinetuneConfig", "FrozenProbeConfig", "PredictConfig", "PreprocessConfig", "PretrainConfig",
    "SCHEMAS", "TaskSettings", "as_config", "network_settings", "register", "settings_class", "task_settings", "validate",
]


# --- groups ---------------------------------------------------------------------------------------
_BASE = PRESETS["base"]
ON_BAD = ("error", "skip")


DECODER_KEYS = ("decoder_dim", "decoder_depth", "decoder_num_heads")
NOT_SIZES = ("pos_mode", "lr_axis")  # encoder settings that the model=tiny|small|base presets leave alone
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
# a fine-tuning task's own settings, now its ``task`` section (asa.api.tasks.TaskSettings): moved keys whose
# values a saved run config carries to the new place (`current_config`), for the task that read them
TASK_KEYS = {
    "segmentation": {"data.samples_per_case": "task.samples_per_case", "loss.focal_weight": "task.focal_weight",
                     "loss.focal_beta": "task.focal_beta"},
    "case": {"loss.class_weighted": "task.class_weighted", "loss.regression": "task.regression",
             "loss.huber_delta": "task.huber_delta", "head.pooling": "task.head.pooling",
             "head.hidden_dim": "task.head.hidden_dim", "head.dropout": "task.head.dropout"},
}
MOVED_KEYS |= {old: f"{new} (with task={task})" for task, moved in TASK_KEYS.items() for old, new in moved.items()}
MOVED_KEYS |= {"loss.*": "task.*", "head.*": "task.head.*"}
# the SW-ViT U-Net's decoder options, now its network settings (asa.models.SWViTUNetSettings): moved keys whose
# values a saved run config carries to the new place (`current_config`), for the network that read them
CARRIED_KEYS = {"segmenter.feature_size": "model.feature_size", "segmenter.input_skip": "model.input_skip",
                "segmenter.spe_frame": "model.spe_frame"}
MOVED_KEYS |= CARRIED_KEYS


# values renamed since 0.1.0, per dotted key: a run folder written before resumes under the new value,
# a command line or preset giving the old one is refused naming the new (`renamed_value`)
RENAMED_VALUES: dict[str, dict[str, str]] = {"model.arch": RENAMED_NETWORKS}
DEFAULT_ARCH = "swvit_unetr"  # the network of a fine-tuning model section that names none


def current_value(key: str, value: Any) -> Any:
    """``value`` of the dotted ``key`` under its name now (`RENAMED_VALUES`), else as it is."""
    renamed = RENAMED_VALUES.get(key, {})
    return renamed.get(value, value) if isinstance(value, str) else value


def current_config(saved: Any) -> dict[str, Any]:
    """A run config written by this or an earlier asa (a resumed run's, a checkpoint's) as this version reads
    it: renamed values under their names now (`RENAMED_VALUES`); a fine-tuning ``model`` section (one beside
    a ``segmenter`` section) with the decoder options its ``segmenter`` section held (`CARRIED_KEYS`: a
    network that follows its pretraining read them; any other never did, so they are left out), each setting
    its network's settings gained since at its default, which is what that run built with, and without the
    null symmetry settings earlier versions stated for every network (a network without them was never
    handed them). A fine-tuning config of an earlier version also gets its task's settings from where they were
    (`TASK_KEYS`: ``data.samples_per_case``, ``loss.*``, ``head.*``) as its ``task`` section, and the record of
    what its checkpoint predicts, which it held as ``task``, as ``outputs``. A copy; the rest as it is."""
    cfg = copy.deepcopy(dict(saved))
    _carry_task_settings(cfg)
    for key in RENAMED_VALUES:  # dotted keys of a section: "model.arch"
        section, leaf = key.split(".")
        if isinstance(node := cfg.get(section), Mapping) and leaf in node:
            cfg[section] = {**node, leaf: current_value(key, node[leaf])}
    model = cfg.get("model")
    if isinstance(segmenter := cfg.get("segmenter"), Mapping) and isinstance(model, Mapping):
        arch = model.get("arch", DEFAULT_ARCH)
        cls, record = NETWORK_SETTINGS.get(arch), network_record(arch)
        taken = {f.name for f in fields(cls)} if cls is not None and record.follows_pretraining else set()
        carried = {place.split(".")[1]: segmenter[old.split(".")[1]] for old, place in CARRIED_KEYS.items()
                   if old.split(".")[1] in segmenter and place.split(".")[1] in taken}
        cfg["segmenter"] = {k: v for k, v in segmenter.items() if f"segmenter.{k}" not in CARRIED_KEYS}
        model = {**model, **carried}
        if cls is not None:
            defaults = {f.name: getattr(cls(arch=arch), f.name) for f in fields(cls)}
            kept = {k: v for k, v in model.items() if k in defaults or v is not None}
            model = {**defaults, **kept}
        cfg["model"] = model
    return cfg


def _is_outputs_record(node: Any) -> bool:
    """Whether a saved ``task`` is an earlier version's record of what a checkpoint predicts: a
    segmentation task's (its ``channels``) or a case head's (its ``kind``)."""
    return isinstance(node, Mapping) and ("channels" in node or "kind" in node)


def _carry_task_settings(cfg: dict[str, Any]) -> None:
    """In place: an earlier fine-tuning run config's record under ``task`` moved to ``outputs``, and the
    settings of its task (`TASK_KEYS`: segmentation, or case for ``data.task=case``) from their old places
    into ``task``; the old places are left out. Any other config is left as it is."""
    if _is_outputs_record(cfg.get("task")) and "outputs" not in cfg:
        cfg["outputs"] = cfg.pop("task")
    data = cfg.get("data")
    if not isinstance(data, Mapping) or "task" in cfg or not ({"loss", "head"} & cfg.keys() or "samples_per_case" in data):
        return
    name = "case" if data.get("task") == "case" else "segmentation"
    settings: dict[str, Any] = {"name": name}
    for old, new in TASK_KEYS[name].items():
        section, leaf = old.split(".")
        node = cfg.get(section)
        if isinstance(node, Mapping) and leaf in node:
            place = settings
            for part in new.split(".")[1:-1]:  # task.head.pooling: the head subsection
                place = place.setdefault(part, {})
            place[new.split(".")[-1]] = node[leaf]
    cfg["data"] = {k: v for k, v in data.items() if k != "samples_per_case"}
    cfg.pop("loss", None)
    cfg.pop("head", None)
    cfg["task"] = settings


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
# is read without it, said in one line. Only keys that never changed a number belong here.
REMOVED_KEYS = {
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


@dataclass
class PretrainModelConfig(EncoderOptions):
    """The masked autoencoder's sizes: the encoder plus the pretraining decoder (group ``sizes/decoder``)."""

    decoder_dim: int = _BASE["decoder_dim"]
    decoder_depth: int = _BASE["decoder_depth"]
    decoder_num_heads: int = _BASE["decoder_num_heads"]
    pos_mode: str = one_of(EncoderSettings.pos_mode, POSITION_MODES)  # none | mirror | paper
    lr_axis: int = EncoderSettings.lr_axis


@dataclass
class DemoConfig:
    """Phantoms generated when ``data.root`` is null."""

    layout: str = MISSING
    cases: int = 10
    size: int = 64
    seed: int = 0
    cache_dir: Optional[str] = None
    targets: bool = False  # phantoms with age / sex / diagnosis in participants.tsv (asa.data.write_demo_dataset)


@dataclass
class SplitConfig:
    seed: int = 0
    ratios: Optional[List[Any]] = None  # fractions or case counts (train, val, test)


@dataclass
class RegionsConfig:
    """Region maps for R-MSA and the focal region loss (``asa.data.RegionSource``)."""

    # auto: cluster when an option needs region maps (said at start-up), else none | none (an option that
    # needs maps is then an error) | cluster (k-means tissue classes in the brain) | file (<dir>/<case
    # id>.nii.gz: an atlas or tissue map per case) | label (the case's own label: only for the loss-only
    # focal term, refused with region attention, which would see the target)
    source: str = one_of("auto", CONFIG_SOURCES)
    k: int = 3  # cluster: number of tissue classes
    seed: int = 0  # cluster: sampling seed
    dir: Optional[str] = None  # file: folder of per-case label maps


@dataclass
class DataConfig:
    """What every dataset preset has."""

    name: str = MISSING
    layout: str = one_of(MISSING, ("auto", *LAYOUTS))
    root: Optional[str] = MISSING  # null: the demo phantoms (presets state it)
    demo: Optional[DemoConfig] = None
    on_bad_case: str = one_of("error", ON_BAD)
    store: Optional[str] = None  # a store written by asa-preprocess (read instead of the files)
    num_workers: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)


@dataclass
class PretrainDataConfig(DataConfig):
    """Unlabelled T1 scans (``configs/pretrain/data``)."""

    crop: int = DEFAULT_CROP  # the crop edge (voxels), the network's img_size
    channels: List[str] = field(default_factory=lambda: ["t1"])
    resample_mm: Optional[float] = None
    augment: bool = True
    flip_axes: List[int] = field(default_factory=list)  # random flips along these array axes (probability 0.5 each)
    augment_on: str = one_of("cpu", AUGMENT_ON)  # device: augmentation drawn in the loader, applied on the device


@dataclass
class SegmentationDataConfig(DataConfig):
    """A labelled segmentation dataset (``configs/finetune/data``)."""

    task: str = MISSING  # a segmentation task (asa.data.get_task), or `case`: one target per case (data.target)
    crop: Optional[int] = None  # the crop edge (voxels); null: the pretraining crop
    # task=case: classification or regression of one target per case (asa.data.read_targets)
    target: Optional[str] = None  # the target column (e.g. diagnosis, age)
    target_kind: str = one_of("auto", ("auto", *TARGET_KINDS))  # auto | binary | multiclass | continuous
    targets: Optional[str] = None  # the table (participants.tsv, a CSV/TSV, dataset.json); null: data.root's
    classes: Optional[List[str]] = None  # class names in index order (binary: the positive class last); null: sorted


@dataclass
class OptimConfig:
    name: str = one_of(MISSING, OPTIMIZERS)  # adamw | sgd
    base_lr: float = MISSING
    scale_lr: bool = False  # true: lr = base_lr × global batch / 256; false: base_lr used as given
    weight_decay: float = 0.0
    betas: Optional[List[float]] = None  # adamw (null: (0.9, 0.95))
    momentum: Optional[float] = None  # sgd (null: 0.99)
    nesterov: Optional[bool] = None  # sgd (null: true)
    schedule: str = one_of("cosine", SCHEDULES)
    min_lr: float = 0.0
    power: float = 0.9  # poly only
    warmup_fraction: float = 0.0  # linear warm-up over this fraction of the schedule (else trainer.warmup_epochs/steps)


@dataclass
class FinetuneOptimConfig(OptimConfig):
    """The fine-tuning optimiser, with encoder-aware learning rates: ``encoder_lr_scale`` for an encoder
    initialised from ``model.pretrained``, ``scratch_encoder_lr_scale`` for one trained from scratch
    (null: ``encoder_lr_scale`` too)."""

    encoder_lr_scale: float = 1.0  # lr multiplier of the pretrained encoder (patch embedding + encoder blocks)
    scratch_encoder_lr_scale: Optional[float] = None
    layer_decay: float = 1.0  # MAE-style layer-wise decay: block i × decay^(depth−i), patch embedding × decay^(depth+1)
    freeze_encoder_epochs: int = 0  # K > 0: the encoder is not updated in the first K epochs (decoder warm-up)


@dataclass
class SegmenterConfig:
    """How a network that follows its pretraining (`asa.models.NetworkRecord.follows_pretraining`) keeps the
    pretrained file's geometry: options of following a file, not of one network (its decoder's options are
    its ``model`` settings: ``segmenter.feature_size`` is now ``model.feature_size``)."""

    allow_grid_change: bool = False  # true: a crop grid other than the pretraining grid only warns
    # the brain frame's grid in patches; null: the pretraining grid (the crop grid from scratch); another than
    # model.pretrained's is refused
    reference_grid: Optional[List[int]] = None


@dataclass
class ProbeConfig:
    """Frozen-encoder probes during pretraining validation (``asa.eval.probe``; methods that give
    encoder tokens): probe/r2_<class>, probe/r2_mean, probe/knn_acc."""

    every: int = 1  # validation rounds between probes (0: off); trainer.monitor=probe/r2_mean trainer.mode=max lets best.pt follow it
    data: Optional[str] = None  # a labeled brats | ibsr | wmh | msd folder; null: demo IBSR phantoms (CSF/GM/WM), held out from data=demo
    layout: str = one_of("auto", ("auto", *SEGMENTATION_LAYOUTS))
    cases: int = 4  # labeled cases used (fit on half, scored on the other half)
    seed: int = 1  # demo phantoms' seed (data=demo uses 0)
    ridge: float = 1.0  # ridge penalty λ on standardised tokens
    knn_k: int = 5


@dataclass
class RelianceConfig:
    """The encoder-reliance diagnostic of ``asa-evaluate``: Dice with the encoder's hidden states as
    trained vs zeroed."""

    checkpoint: Optional[str] = None  # a fine-tuned ASASegmenter (asa-finetune best.pt / last.pt); null: off
    overlap: float = 0.5  # sliding-window overlap
    device: str = "auto"  # auto | cpu | cuda


# data.task=case: a case's outputs (probabilities, values) averaged over its test-time crops: grid (the
# brain-centred crop and crops shifted by half a crop along each axis where the volume is larger than
# the crop; asa.data.case_crop_origins) | centre (the brain-centred crop alone, the one fine-tuning trains on)
def _case_crops() -> Any:
    return one_of(DEFAULT_CASE_CROPS, CASE_CROPS)


@dataclass
class ValidationConfig:
    overlap: float = 0.5  # sliding-window overlap
    sw_batch_size: int = 2
    crops: str = _case_crops()  # data.task=case: grid | centre (above); asa-predict's crops should match it


# --- entry points ---------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Keys of every training run."""

    output_dir: str = MISSING
    resume: Any = False  # false | true | auto | a .pt path
    overwrite: bool = False  # start anew in a folder holding a run, moving that run aside
    debug: bool = False  # full tracebacks instead of one-line errors
    seed: int = 0  # global seed; rank r uses seed + r for its own random streams
    device: str = "auto"  # auto (cuda:<local rank> if available, else cpu) | cpu | cuda
    resume_must_match: List[str] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)


@dataclass
class ResEncPretrainModel:
    """``model=resenc`` in pretraining: nnU-Net's residual-encoder U-Net (`asa.models.cnn.resenc`), its
    topology planned from the crop; the masking and loss are the method's (``method=mae|asa``)."""

    arch: str = "resenc"
    size: str = one_of("tiny", tuple(RESENC_SIZES))  # tiny (CPU tests) | M | L (nnU-Net's ResEnc presets)
    lr_axis: int = 0  # the left-right axis (RAS+: 0), for mirror_visible and coord_channel


# the pretraining model section by ``model.arch`` (the SW-ViT sizes name none)
PRETRAIN_MODELS: dict[str, type] = {"swvit": PretrainModelConfig, "resenc": ResEncPretrainModel}


def pretrain_model_node(model: Any) -> Any:
    """The schema of a pretraining ``model`` section: the SW-ViT sizes, or the settings of the network its
    ``arch`` names; an unknown arch is refused naming it."""
    arch = model.get("arch", "swvit") if isinstance(model, Mapping) else "swvit"
    if arch not in PRETRAIN_MODELS:
        raise ValueError(f"model.arch={arch}: asa-pretrain pretrains {', '.join(PRETRAIN_MODELS)} "
                         "(model=tiny|small|base or model=resenc)")
    return PRETRAIN_MODELS[arch]()


@dataclass
class PretrainConfig(RunConfig):
    # the SW-ViT sizes (PretrainModelConfig) or another network's settings (PRETRAIN_MODELS, by model.arch),
    # typed by `validate`
    model: Any = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    # the pretraining method and its own settings (asa.methods; the config group ``method``)
    method: MethodSettings = field(default_factory=MaskedAutoencoderSettings)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass
class FinetuneConfig(RunConfig):
    # the network's typed settings (asa.models.NetworkSettings): which class depends on model.arch, so the
    # group's presets start from the network's settings at their defaults (config group ``network``) and
    # `validate` checks the section against that class; `as_config` gives the instance. {}: swvit_unetr's
    model: Any = field(default_factory=dict)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    data: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # the settings of the task that claims data.task (asa.api.tasks.TaskSettings; the config group ``task``),
    # typed by `validate`
    task: Any = field(default_factory=dict)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class PredictConfig:
    """``asa-predict`` (`asa.api.predict`); ``configs/predict/predict.yaml`` states only what differs."""

    checkpoint: str = MISSING  # a fine-tuning checkpoint (best.pt / last.pt): a segmenter's or a case head's
    input: Any = MISSING  # a dataset folder in any supported layout, a folder of NIfTI files, or a list of files
    # folder for <case_id>.nii.gz and predictions.json (which checkpoint wrote each case); a case head: predictions.csv
    output: str = MISSING
    # auto | brats | ibsr | wmh | msd | files; a case head: auto | bids | caps | filelist
    layout: str = one_of("auto", ("auto", *LAYOUTS))
    overlap: float = 0.5  # sliding-window overlap
    sw_batch_size: Union[int, str] = "auto"  # windows per forward pass; auto: 1 on a CPU, sized to free memory on CUDA
    tta: bool = False  # flip test-time augmentation
    tta_axes: List[int] = field(default_factory=lambda: [0, 1, 2])  # flips along every subset of these axes (2^k passes)
    save_probabilities: bool = False  # also write <case_id>_probabilities.nii.gz (4D, one volume per output)
    crops: str = _case_crops()  # a case head: grid | centre (ValidationConfig), as validation.crops of its fine-tuning
    overwrite: bool = False  # replace the predictions in output (the old folder is moved to <output>.replaced-<time>)
    resume: bool = False  # keep the predictions this checkpoint already wrote in output, predict the rest
    split_file: Optional[str] = None  # a run's splits.json: predict only the cases of `subset` (as asa-evaluate scores)
    subset: str = "test"  # a list of split_file (checked against the file, which may hold its own)
    on_bad_case: str = one_of("error", ON_BAD)  # error | skip: predict the other cases and list the unusable ones
    device: str = "auto"  # auto | cpu | cuda
    # auto (fp16 on CUDA, bf16 on a CPU with native bf16 matmul, else fp32) | fp16 | bf16 | off
    amp: str = one_of("auto", AMP_CHOICES)
    threads: Optional[int] = None  # torch intra-op CPU threads (null: torch's default)
    compile: bool = False  # torch.compile the network (pays off over many windows and cases)
    debug: bool = False  # full tracebacks instead of one-line errors


@dataclass
class EvaluateConfig:
    """``asa-evaluate`` (`asa.api.evaluate`); ``configs/evaluate/evaluate.yaml`` states only what differs."""

    # folder with <case_id>.nii.gz predictions (asa-predict output); data=targets: with predictions.csv;
    # null: only the reliance diagnostic
    pred: Optional[str] = None
    output: str = MISSING  # folder for per_case.csv and summary.json (data=targets: summary.json)
    split_file: Optional[str] = None  # a run's splits.json: evaluate only the cases of `subset`
    subset: str = "test"  # a list of split_file (checked against the file, which may hold its own)
    on_missing: str = one_of("error", ON_BAD)  # error | skip: cases without a prediction
    num_workers: int = 0  # processes for HD95
    # max_directed (larger directed 95th percentile; MONAI, BraTS) | pooled (95th percentile of both
    # directions pooled; medpy, as in the ASA paper's tables)
    hd95: str = one_of("max_directed", HD95_CONVENTIONS)
    # normalised surface Dice tolerance in mm: one number, or one per region/class in the task's order
    # (e.g. [1, 1, 2] for WT TC ET); both empty -> 1, one empty -> 0
    nsd_tolerance: Any = 1.0
    reliance: RelianceConfig = field(default_factory=RelianceConfig)
    debug: bool = False  # full tracebacks instead of one-line errors
    data: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)


@dataclass
class FrozenProbeConfig:
    """``asa-probe``: frozen-encoder probes of checkpoints on a labeled dataset (`asa.api.probe`)."""

    # [a.pt, b/encoder.safetensors, random]: checkpoints or exports of any asa network with an encoder, plus
    # random (the first file's network, random init) or random:<tiny|small|base>
    encoders: List[str] = MISSING
    names: Optional[List[str]] = None  # row names, one per encoder (null: the entries as given)
    output: str = MISSING  # folder for probe.md, probe.csv, probe.svg and probe.json
    overwrite: bool = False  # replace results in output (the old folder is moved to <output>.replaced-<time>)
    folds: int = 5  # k of the k-fold cross-validation; a subject's sessions stay in one fold
    seed: int = 0  # folds, bootstrap and random-init weights
    ridge: float = 1.0  # ridge penalty λ on standardised features (continuous targets, voxel labels)
    logistic: float = 1.0  # L2 penalty λ of the logistic regression (class targets; scikit-learn's C = 1/λ)
    logistic_steps: int = 300  # L-BFGS iterations at most (scikit-learn max_iter)
    knn_k: int = 5  # neighbours of the k-NN probes (cosine similarity on standardised features)
    bootstrap: int = 1000  # bootstrap resamples of the subjects, all their sessions (0: no intervals)
    confidence: float = 0.95
    crop: Optional[int] = None  # input edge for an encoder that records none (SA-Swin pretraining exports); else its own
    channels: List[str] = field(default_factory=lambda: ["t1"])  # input channels, as in pretraining
    batch_size: int = 2  # volumes per forward pass
    split_file: Optional[str] = None  # a run's splits.json: probe only the cases of `subset`
    subset: str = "test"
    device: str = "auto"  # auto | cpu | cuda
    debug: bool = False  # full tracebacks instead of one-line errors
    data: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)


@dataclass
class PreprocessConfig:
    # a data preset of asa-pretrain or asa-finetune: checked against PretrainDataConfig or
    # SegmentationDataConfig when the job runs (a fine-tuning preset is one with a task)
    data: Any = MISSING
    workers: int = 0  # preprocessing processes (0: one per CPU core, at most 8)
    # the images' precision in the store: float16 | float32 (labels and brain masks: uint8)
    dtype: str = one_of("float16", STORE_DTYPES)
    hash: bool = False  # also record each source file's sha256; a rerun then compares contents, not mtimes
    progress: bool = True  # a progress bar on stderr
    debug: bool = False  # full tracebacks instead of one-line errors
    optim: Any = None  # unused: data=demo also picks an optimiser preset of asa-pretrain


SCHEMAS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "predict": PredictConfig,
           "evaluate": EvaluateConfig, "preprocess": PreprocessConfig, "probe": FrozenProbeConfig}


def _schema_node(entry: str, method: str | None = None) -> Any:
    """The schema an entry point's config is checked against; for pretraining, with the settings of
    ``method`` (None: the bare method base, which the ``method`` group's choice fills in)."""
    if entry != "pretrain":
        return SCHEMAS[entry]
    return PretrainConfig(method=MethodSettings() if method is None else get_method(method).Settings())


def register() -> None:
    """Store each schema as ``<entry>_schema`` and each pretraining method's settings as an option of
    the ``method`` group (idempotent; called before any compose, so methods registered by then count)."""
    store = ConfigStore.instance()
    for name in SCHEMAS:
        node = _schema_node(name)
        if name == "pretrain":  # the model section's keys depend on its arch: `validate` types it
            node.model = {}
        store.store(name=f"{name}_schema", node=node)
    for name, method in registered_methods().items():
        store.store(group="method", name=name, node=method.Settings(name=name))
    for name, task in registered_tasks().items():  # task=<name>: a fine-tuning task's settings at their defaults
        store.store(group="task", name=name, node=task.Settings(name=name))
    # model=<preset>: a network's settings at their defaults, as a mapping: `validate` types the section by the
    # network it names, so a preset or experiment setting an option the network lacks is refused naming it
    for arch, settings in NETWORK_SETTINGS.items():
        store.store(group="network", name=arch, node=asdict(settings(arch=arch)))
    for arch, settings in PRETRAIN_MODELS.items():  # asa-pretrain's model presets start from these defaults
        store.store(group="pretrain_network", name=arch, node=asdict(settings()))
    for name, sizes in PRESETS.items():  # model=tiny|small|base: the encoder and, for pretraining, the decoder
        encoder = asdict(EncoderOptions(**{k: v for k, v in sizes.items() if k not in DECODER_KEYS}))
        sized = {k: v for k, v in encoder.items() if k not in NOT_SIZES}
        store.store(group="sizes/encoder", name=name, node=sized)  # a mapping: fine-tuning adds arch
        store.store(group="sizes/decoder", name=name, node={k: sizes[k] for k in DECODER_KEYS})


def _preset_of(arch: str) -> str:
    """``model=<arch>`` where a fine-tuning model preset of that name exists, else a pointer to the presets."""
    import importlib.resources

    try:
        if (importlib.resources.files("asa.configs") / "finetune" / "model" / f"{arch}.yaml").is_file():
            return f"model={arch}"
    except (ModuleNotFoundError, OSError):
        pass
    return f"a model preset of {arch} (model=tiny|small|base for swvit_unetr; docs/configuration.md lists them)"


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
                                 f"from its preset); choose the network with {_preset_of(arch)} instead of "
                                 "model.arch") from None
            raise ValueError(f"{given}: model arch {arch!r} has no such option; it takes "
                             f"{', '.join(f.name for f in fields(cls))}") from None
        raise ValueError(f"{given}: {str(err).splitlines()[0]}") from None
    check_choices(typed, cls, "model.")
    return OmegaConf.to_object(typed)


DEFAULT_TASK = "segmentation"  # the ``task`` group's default (configs/finetune/finetune.yaml)


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
    if entry == "finetune":  # the model section: its network's settings (refused naming model.<key>)
        model = network_settings(cfg.model)
        data_task = OmegaConf.select(cfg, "data.task", default=None)
        try:  # the task section: the settings of the task that claims data.task (refused naming task.<key>)
            task = None if data_task is None else task_settings(cfg.get("task"), str(data_task))
        except ValueError as err:
            raise ValueError(f"asa-finetune: invalid option {err}") from None
        node = FinetuneConfig(model=type(model)(arch=model.arch),
                              task=TaskSettings() if task is None else type(task)(name=task.name))
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
