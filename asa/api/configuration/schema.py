"""Structured-config schemas of the jobs: the typed configs (dataclasses) of every entry point and their sections.

Each primary config (``configs/<entry>/<entry>.yaml``) starts its defaults list with its schema (stored in
Hydra's ConfigStore by `asa.api.configuration.checks.register`), so Hydra checks every preset and every ``key=value``
against these dataclasses while composing; `asa.api.configuration.checks.validate` repeats the check on a composed
config. What earlier versions wrote (moved keys, old run configs) is read by `asa.api.configuration.compat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator, Mapping
from typing import Any, List, Optional, Union

from omegaconf import MISSING

from asa.data.augmentation import AUGMENT_ON
from asa.data.layouts import LAYOUTS, SEGMENTATION_LAYOUTS
from asa.data.preprocessing import PERCENTILES
from asa.data.regions import CONFIG_SOURCES
from asa.data.store import STORE_DTYPES
from asa.eval.metrics import HD95_CONVENTIONS
from asa.choices import one_of
from asa.methods import MaskedAutoencoderSettings, MethodSettings
from asa.models import DEFAULT_CROP
from asa.models.family import DEFAULT_FAMILY, pretrain_model_sections
from asa.models import PretrainModelConfig
from asa.train import TrainerSettings
from asa.train.optim import OPTIMIZERS
from asa.train.precision import AMP_CHOICES
from asa.train.schedule import SCHEDULES

__all__ = [
    "CONFIG_VERSION", "DEFAULT_ARCH", "EvaluateConfig", "FinetuneConfig", "FrozenProbeConfig", "PredictConfig", "PreprocessConfig", "PretrainConfig",
    "PRETRAIN_MODELS", "SCHEMAS", "pretrain_family",
]


# --- groups ---------------------------------------------------------------------------------------
ON_BAD = ("error", "skip")
# the layout version of a saved run config (config.yaml, a checkpoint's config): one more with each change to the
# layout, whose numbered migration (asa.api.configuration.compat.MIGRATIONS) reads the one before
CONFIG_VERSION = 7
DEFAULT_ARCH = "swvit_unetr"  # the network of a fine-tuning model section that names none
# a case head's test-time crops (the case task's, asa.api.tasks.case.crops): grid, the centred crop and the shifted
# ones (up to 3 positions per axis, 27 crops); centre, the brain-centred crop alone, the crop fine-tuning trains on
CASE_CROPS = ("grid", "centre")
DEFAULT_CASE_CROPS = "grid"


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

    # the fine-tuning task that claims it (asa.api.tasks): a segmentation task (asa.data.get_task), or `case`: one
    # target per case (task.target); its own settings are the ``task`` section
    task: str = MISSING
    crop: Optional[int] = None  # the crop edge (voxels); null: the pretraining crop
    # the image channels a segmentation task reads, by the names the task gives them (e.g. [T1] of a 4-channel
    # nnU-Net raw set), in this order; null: all of them. Read by asa-finetune and asa-preprocess (asa-probe
    # takes its own channels option); the checkpoint's task records them, so asa-predict reads the same
    channels: Optional[List[str]] = None
    # [low, high]: each image is clipped to its brain's low-th and high-th intensity percentiles, then z-scored inside
    # the brain (0 <= low < high <= 100); [0, 100] clips nothing: nnU-Net's ZScoreNormalization with use_mask_for_norm.
    # Read by asa-finetune and asa-preprocess; the checkpoint records it, so asa-predict preprocesses alike
    percentiles: List[float] = field(default_factory=lambda: list(PERCENTILES))
    # true: train although test cases were in model.pretrained's pretraining cohort (asa.api.machinery.cohort); false: refused
    accept_pretraining_overlap: bool = False


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
    (null: ``encoder_lr_scale`` too); ``scratch_base_lr`` the peak lr of a run from scratch (null: ``base_lr``)."""

    scratch_base_lr: Optional[float] = None  # the base lr without model.pretrained (optim=nnunet: 1e-2; null: base_lr)
    encoder_lr_scale: float = 1.0  # lr multiplier of the pretrained encoder (patch embedding + encoder blocks)
    scratch_encoder_lr_scale: Optional[float] = None
    layer_decay: float = 1.0  # MAE-style layer-wise decay: block i × decay^(depth−i), patch embedding × decay^(depth+1)
    freeze_encoder_epochs: int = 0  # K > 0: the encoder is not updated in the first K epochs (decoder warm-up)


@dataclass
class SegmenterConfig:
    """How a network that follows its pretraining (its family's road: `asa.models.swvit.family.SWViTRoad`) keeps the
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


# --- entry points ---------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Keys of every training run."""

    version: int = CONFIG_VERSION  # the layout of the saved run config (set by asa; docs/run-folders.md)
    output_dir: str = MISSING
    resume: Any = False  # false | true | auto | a .pt path
    overwrite: bool = False  # start anew in a folder holding a run, moving that run aside
    debug: bool = False  # full tracebacks instead of one-line errors
    seed: int = 0  # global seed; rank r uses seed + r for its own random streams
    device: str = "auto"  # auto (cuda:<local rank> if available, else cpu) | cpu | cuda
    resume_must_match: List[str] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)


class _PretrainModels(Mapping):
    """asa-pretrain's ``model.arch`` -> the dataclass of its ``model`` section: a read-only view of what each
    network family with a masked twin declared (`asa.models.family.Family`'s ``masked``, ``pretrain_settings``)."""

    def __getitem__(self, arch: str) -> type:
        return pretrain_model_sections()[arch]

    def __iter__(self) -> Iterator[str]:
        return iter(pretrain_model_sections())

    def __len__(self) -> int:
        return len(pretrain_model_sections())


PRETRAIN_MODELS: Mapping[str, type] = _PretrainModels()


def pretrain_family(model: Any) -> str:
    """The network family a pretraining ``model`` section trains: its ``arch``; none: the SW-ViT's sizes."""
    return model.get("arch", DEFAULT_FAMILY) if isinstance(model, Mapping) else DEFAULT_FAMILY



@dataclass
class PretrainConfig(RunConfig):
    # the model section its masked network declared (PRETRAIN_MODELS, by model.arch; the SW-ViT sizes by
    # default), typed by `validate`
    model: Any = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    # the pretraining method and its own settings (asa.methods; the config group ``method``)
    method: MethodSettings = field(default_factory=MaskedAutoencoderSettings)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # the step whose state encoder.pt exports (kept as kept_XXXXXXXX.pt: trainer.keep_steps); null: the lowest
    # held-out round (best.pt), or last.pt without validation. asa-study exports its noise control at its arm's step
    export_step: Optional[int] = None


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
    # a case head: a case's outputs averaged over its test-time crops, as task.crops of its fine-tuning: grid (the
    # brain-centred crop and crops shifted by half a crop along each axis where the volume is larger than the
    # crop; asa.api.tasks.case.crops.case_crop_origins) | centre (the brain-centred crop alone, the one fine-tuning trains on)
    crops: str = one_of(DEFAULT_CASE_CROPS, CASE_CROPS)
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
    # replace an earlier evaluation in output (its files are moved to <output>.replaced-<time>/)
    overwrite: bool = False
    # a run's splits.json: evaluate only the cases of `subset`; auto: the split of the run whose checkpoint wrote pred
    # (pred/predictions.json -> <run>/checkpoints/<file> -> <run>/splits.json), every case where none is found (said);
    # null: every case, training cases of that run said in a warning
    split_file: Optional[str] = "auto"
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
    # the settings of the task that claims data.task (case: task.target, the targets table), typed by `validate`
    task: Any = field(default_factory=dict)


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
    # the settings of the task that claims data.task (case: task.target, the targets table), typed by `validate`
    task: Any = field(default_factory=dict)


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
