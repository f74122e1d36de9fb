"""The segmentation task (voxel labels): ``data.task`` a segmentation task of `asa.data.get_task` (``brats``,
``ibsr``, ``wmh``, ``msd``). Its four jobs — training (the hooks of `asa.api.tasks.FinetuneTask.finetune`, with
the task's step, sliding-window Dice validation and image panel), prediction (one label file per case),
evaluation (Dice, HD95, NSD, encoder reliance) and the voxel-label probes — and its own settings (``task.*``,
`Settings`)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import ListConfig
from torch import nn
from torch.utils.data import Dataset

from asa.api.machinery.dataset import (TRAINING_SPACING, case_grid, cases_of_split, check_crop_fits,
                                      check_labels_present, dataset_root, default_crop, planned_spacing, region_source)
from asa.api.machinery.networks import build_from_config
from asa.api.machinery.prediction import PredictSetup
from asa.api.machinery.run import OptionError
from asa.api.configuration.schema import EvaluateConfig, FrozenProbeConfig, PredictConfig
from asa.api.configuration.tasks import TaskSettings
from asa.api.tasks import FinetuneRun, FinetuneTask, ProbeTargets, register_finetune_task
from asa.api.machinery.training import record_geometry
from asa.choices import one_of
from asa.data import build_segmentation_dataset, discover, get_task, non_mri_channels
from asa.data.case import match_channels
from asa.data.labels import TASKS, Task
from asa.data.lattice import OVERSAMPLINGS, SAMPLINGS
from asa.eval import evaluate_cases, match_predictions
from asa.eval.evaluate import nsd_tolerances, write_results
from asa.eval.frozen import FrozenEncoder
from asa.eval.inference import predict_volume
from asa.eval.metrics import dice
from asa.eval.predict import Predictor, gather_cases, predict_case
from asa.eval.probe import build_probe_set
from asa.eval.probe_cv import token_probes
from asa.eval.reliance import encoder_reliance, format_reliance, write_reliance
from asa.io import is_nifti, is_temporary
from asa.losses import DeepSupervisionLoss, SegmentationLoss
from asa.choices import in_range
from asa.models import Capabilities, capabilities
from asa.train.distributed import DistEnv, resolve_device
from asa.train.panels import panel_centre, slice_grid
from asa.train.precision import amp_name

__all__ = ["SPACING_RATIO", "DiceValidator", "SegmentationTask", "Settings", "channel_note", "crop_grid",
           "make_segmentation_panel_fn", "output_masks", "segmentation_step", "spacing_note", "symmetry_warning"]

# a case's voxel edge this many times the training spacing's (or its inverse) along an axis is noted: its structures
# reach the network at another scale than it learned (a 1 mm model on 1×1×3 mm slices)
SPACING_RATIO = 1.2


@dataclass
class Settings(TaskSettings):
    """``task.*`` of a segmentation run."""

    name: str = "segmentation"
    samples_per_case: int = in_range(1, 1)  # random crops drawn from each case per loaded item
    # classes (nnU-Net's): a share of crops centred on a voxel of a class drawn uniformly among the classes present,
    # the rest placed uniformly | foreground (asa's earlier sampler): a share centred on any labelled voxel, the rest on an
    # unlabelled one (asa.data.lattice.LatticeCropd)
    sampling: str = one_of("classes", SAMPLINGS)
    foreground_fraction: Optional[float] = None  # the forced share; null: 0.33 (classes, nnU-Net's) or 2/3 (foreground)
    # batch (nnU-Net's): that share of every batch's crops is forced, a fixed number per batch | crop (asa's earlier):
    # each crop forced with that probability (asa.data.lattice.forced_crops)
    oversampling: str = one_of("batch", OVERSAMPLINGS)
    # true: the Dice term counts the background class too (asa's earlier loss); false: nnU-Net's (do_bg=False).
    # Multilabel tasks (BraTS regions) have no background channel: every region counts either way
    dice_background: bool = False
    # > 0: add this weight times the focal region loss (RAT, docs/method.md §1.6b; needs data.regions)
    focal_weight: float = in_range(0.0, 0.0)
    focal_beta: float = in_range(1.0, 0.0)
    overlap: float = 0.5  # sliding-window overlap of validation
    sw_batch_size: int = 2  # validation windows per forward pass


def reading_channels(task: Task, channels: Sequence[str] | None, *, where: str) -> Task:
    """``task`` reading the image channels ``channels`` alone, in that order (``data.channels``: names as the task
    gives them, matched without regard to case); None: ``task`` as it is. A channel the task lacks, one named twice
    or none at all is refused naming ``data.channels`` and ``where`` (the data's task)."""
    if channels is None:
        return task
    names = match_channels(list(channels), task.channels, option="data.channels", where=where)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"data.channels={list(channels)}: name each channel to read once, at least one, of "
                         f"{where}'s {', '.join(task.channels)}")
    return dataclasses.replace(task, channels=tuple(names))


def channel_note(cases: Sequence, task) -> str | None:
    """Which of the inputs' channels the checkpoint's task reads, when the cases hold more than it uses."""
    offered = sorted({name for c in cases for name in c.images}, key=str)
    extra = [name for name in offered if name not in task.channels]
    if not extra:
        return None
    return (f"the checkpoint's task {task.name} reads {len(task.channels)} channel(s): {', '.join(task.channels)}; "
            f"the inputs also hold {', '.join(extra)}, which are not used")


def spacing_note(cases: Sequence, recorded: Mapping[str, Any] | None) -> str | None:
    """Which of ``cases`` have voxels of another size than the training spacing ``recorded`` (the run config's
    `TRAINING_SPACING`: ``{"median_mm": [x, y, z]}``, RAS order) by more than `SPACING_RATIO` along an axis, read off
    their headers; None when none do or the checkpoint records no spacing. asa-predict predicts each case on its
    own grid: nothing is resampled, so this is said, not refused."""
    if not isinstance(recorded, Mapping) or recorded.get("median_mm") is None:
        return None
    trained = [float(v) for v in recorded["median_mm"]]
    if len(trained) != 3 or min(trained) <= 0:
        return None
    other = []
    for case in cases:
        grid = case_grid(case)
        if grid is not None and any(v > 0 and max(v / t, t / v) > SPACING_RATIO for v, t in zip(grid[0], trained)):
            other.append((case.id, grid[0]))
    if not other:
        return None

    def mm(spacing: Sequence[float]) -> str:
        return "×".join(f"{v:.3g}" for v in spacing) + " mm"

    shown = ", ".join(f"{cid} {mm(spacing)}" for cid, spacing in other[:3]) + (", ..." if len(other) > 3 else "")
    return (f"{len(other)} of {len(cases)} case(s) have voxels other than the checkpoint's training spacing "
            f"{mm(trained)} (the median of its training cases): {shown}; each is predicted on its own grid, not "
            f"resampled, so the network sees it at another scale than it learned; resample them to {mm(trained)} "
            "for predictions as trained")


def symmetry_warning(declared: Capabilities, channels: tuple[str, ...], source: str) -> str | None:
    """Why a network's symmetric parts may not fit the data (channels that are no MRI sequence), or None.

    ``declared``: the network's capabilities (its ``symmetry`` parts); ``channels``: the task's channel
    names; ``source``: where they were read (the dataset.json or the data preset)."""
    other = non_mri_channels(channels)
    if not declared.symmetry or not other:
        return None
    return (f"{source} names the channels {list(channels)}, of which {list(other)} name no MRI sequence: "
            f"{' and '.join(declared.symmetry)} assume a left-right symmetric brain MRI with its mid-sagittal plane "
            "at the crop centre, which may not hold on these data (a network without these parts makes no such "
            "assumption)")


def crop_grid(model: torch.nn.Module, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Where a network's training crops may start (`build_segmentation_dataset`'s ``lattice``, ``lr_axis`` and
    ``reference_size``): on the brain frame's patch lattice where the network declares one (the SW-ViT's
    patches, the coordinate channel's voxel grid), else at any voxel, as nnU-Net crops (DynUNet, ResEnc, a
    plug-in). ``settings``: the run's resolved ``model`` section (its ``lr_axis``, the brain frame's mirror axis)."""
    if (grid := capabilities(model).lattice) is None:
        return dict(lattice=1)
    return dict(lattice=grid[0], lr_axis=settings["lr_axis"], reference_size=grid[1])


def segmentation_step(criterion: nn.Module) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, dict]]:
    """step_fn(model, batch) -> (loss, logs) for batches {"image": [B,C,...], "label": target,
    "offset": [B, 3]} and, with region maps, "region" [B,1,...]: a brain-frame network gets the
    crops' patch offsets, a network with region attention and the criterion the region maps."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        kwargs = {}
        if capabilities(model).offsets and "offset" in batch:
            kwargs["offsets"] = batch["offset"]
        regions = batch.get("region")
        if capabilities(model).regions:
            kwargs["regions"] = regions
        logits = model(batch["image"], **kwargs)
        if regions is None:
            return criterion(logits, batch["label"]), {}
        return criterion(logits, batch["label"], regions), {}

    return step


def output_masks(probs: torch.Tensor, target: torch.Tensor, task: Task) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(predicted mask, reference mask, ignore mask) per output region/class, as ``asa-evaluate``
    scores them: the prediction is decoded to labels (``task.prediction_to_label``, e.g. nested
    BraTS regions) and cut into ``task.region_masks``; the reference masks and ignore mask come
    from the target (identical to the raw label's region masks and ignore mask).

    probs: [K, ...]; target: multilabel [K, ...] float, softmax [1, ...] int64 with -1 = ignore.
    """
    pred = task.region_masks(task.prediction_to_label(probs))
    pred = [pred[n] for n in task.output_names]
    if task.multilabel:
        ref = (target > 0.5).cpu().numpy()
        return [(pred[k], ref[k], None) for k in range(len(pred))]
    tgt = target[0].cpu().numpy()
    ignore = tgt == -1
    return [(pred[k - 1], tgt == k, ignore) for k in range(1, len(pred) + 1)]


class DiceValidator:
    """validate(model) -> {"dice": mean Dice over outputs and cases, "dice_<name>": per output}; `of_units`: the
    same for each of K units validated as one (`asa.train.fused.UnitsValidator`).

    Whole volumes go through `predict_volume` (the path ``asa-predict`` takes, brain frame included:
    items may carry their ``"centre"``); Dice is computed on decoded labels as ``asa-evaluate`` does.
    Each rank predicts every world_size-th whole validation volume; per-output sums and the case
    count are all-reduced, so every rank returns the exact mean over all cases (also when a rank
    has no case of its own).
    """

    def __init__(self, dataset: Dataset, *, task: Task, roi_size: Sequence[int], env: DistEnv, overlap: float = 0.5,
                 sw_batch_size: int = 2) -> None:
        self.dataset, self.task, self.roi_size, self.env = dataset, task, tuple(roi_size), env
        self.overlap, self.sw_batch_size = overlap, sw_batch_size
        self.indices = list(range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return self.of_units(model, 1)[0]

    def of_units(self, model: nn.Module, units: int) -> list[dict[str, float]]:
        """Each unit's metrics, ``model`` giving ``units`` networks' outputs side by side on the channel axis
        (`asa.models.units.Units`): each case is read, cut into windows and blended once for all of them."""
        names = self.task.output_names
        totals = torch.zeros(units, len(names) + 1, dtype=torch.float64)  # per unit: Dice sums per output, cases
        for i in self.indices:
            item = self.dataset[i]
            probs = predict_volume(model, item["image"], roi_size=self.roi_size, multilabel=self.task.multilabel,
                                   overlap=self.overlap, sw_batch_size=self.sw_batch_size, device=self.env.device,
                                   centre=item.get("centre"), units=units,
                                   regions=item.get("region") if capabilities(model).regions else None)
            for unit, own in zip(totals, probs.chunk(units)):
                scores = [dice(p, r, ignore=ig) for p, r, ig in output_masks(own, item["label"], self.task)]
                unit += torch.tensor([*scores, 1.0], dtype=torch.float64)
        if self.env.distributed and dist.is_initialized():
            totals = totals.to(self.env.device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        metrics = []
        for unit in totals:
            per_output = (unit[:-1] / unit[-1].clamp_min(1)).tolist()
            metrics.append({"dice": sum(per_output) / len(per_output),
                            **{f"dice_{n}": v for n, v in zip(names, per_output)}})
        return metrics


def make_segmentation_panel_fn(
    item: Mapping, *, multilabel: bool, roi_size: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 2,
) -> Callable[[nn.Module, int], dict[str, torch.Tensor]]:
    """panel(model, step) -> {"finetune/1_image", "finetune/2_label", "finetune/3_prediction": [1, h, w]}
    on one validation case: its first channel, label and prediction (label maps scaled so class k is
    k/K), each a labelled image of sagittal, coronal and axial slices through the centre of mass of
    the label's foreground (else of the brain), captioned with their index
    (`asa.train.panels.slice_grid`), so that an off-centre lesion is on the panel."""
    image, target = item["image"], item["label"]

    def as_map(t: torch.Tensor, k: int) -> torch.Tensor:  # multilabel [K,...] or [1,...] classes -> [X,Y,Z]
        if multilabel:
            t = (t > 0.5).float()
            return (t * torch.arange(1, k + 1, dtype=t.dtype).view(-1, 1, 1, 1)).amax(0) / k
        return t[0].float().clamp_min(0) / max(k - 1, 1)

    foreground = (target > 0.5).any(0) if multilabel else target[0] > 0  # ignore (-1) is not foreground
    at = panel_centre(image.shape, foreground, (image != 0).any(0))

    def panel(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        probs = predict_volume(model, image, roi_size=roi_size, multilabel=multilabel, overlap=overlap,
                               sw_batch_size=sw_batch_size, device=device, centre=item.get("centre"),
                               regions=item.get("region"))
        k = probs.shape[0]
        pred = probs if multilabel else probs.argmax(0, keepdim=True)
        img = image[0].float()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-6)
        return {"finetune/1_image": slice_grid({"image": img}, at),
                "finetune/2_label": slice_grid({"label": as_map(target, k)}, at),
                "finetune/3_prediction": slice_grid({"prediction": as_map(pred, k)}, at)}

    return panel


@register_finetune_task
class SegmentationTask(FinetuneTask):
    """Voxel labels: ``data.task`` a segmentation task of `asa.data.get_task` (brats, ibsr, wmh, msd), the name
    its checkpoints record."""

    name = "segmentation"
    Settings = Settings
    data_tasks = tuple(sorted([*TASKS, "msd"]))

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task.lower() in cls.data_tasks

    # --- training: the hooks of FinetuneTask.finetune ---------------------------------------------------
    def check(self, run: FinetuneRun) -> None:
        cfg, settings = run.cfg, run.cfg.task
        needed_by = []  # the options that need a region map per case
        network = cfg.model.region_option()  # the one that feeds it into the network (never a map made from the labels)
        if network is not None:
            needed_by.append(network)
        if settings.focal_weight > 0:
            needed_by.append(f"task.focal_weight={settings.focal_weight}")
        self.regions = region_source(cfg.data, needed_by, network=network, env=run.env)
        self.root = dataset_root(cfg.data)[0]
        self.task = reading_channels(get_task(cfg.data.task, root=self.root), cfg.data.channels,
                                     where=f"the {cfg.data.task} task")

    def build_network(self, run: FinetuneRun, splits: Mapping[str, list] | None) -> tuple[torch.nn.Module, dict]:
        cfg, data, task = run.cfg, run.cfg.data, self.task
        model = build_from_config(cfg.model, cfg.segmenter,
                                  in_channels=len(task.channels), out_channels=task.num_outputs,
                                  crop=None if data.crop is None else int(data.crop),
                                  default_crop=default_crop(data))  # one grid: the pretraining crop
        source = str(self.root / "dataset.json") if task.name == "msd" else f"data={data.name}"
        if run.env.is_main and (warning := symmetry_warning(capabilities(model), task.channels, source)):
            print(f"[asa] warning: {warning}", file=sys.stderr, flush=True)
        run.crop = crop = record_geometry(run.resolved, model)  # the crop, position code, axis and reference grid
        if (fault := capabilities(model).crop_fault(crop)) is not None:  # before anything is written
            raise OptionError(f"data.crop={crop}: {fault}")
        run.resolved["data"]["regions"]["source"] = "none" if self.regions is None else self.regions.source
        self.lattice = crop_grid(model, run.resolved["model"])
        return model, dataclasses.asdict(task)  # asa-predict rebuilds the task from the checkpoint

    def cases(self, run: FinetuneRun, cases: list) -> list:
        check_crop_fits(run.crop, cases)
        check_labels_present(cases, where=f"data={run.cfg.data.name} data.root={self.root}")
        return cases

    def check_split(self, run: FinetuneRun, splits: Mapping[str, list]) -> None:
        super().check_split(run, splits)
        if run.env.is_main and (spacing := planned_spacing(splits["train"])) is not None:
            # the spacing nnU-Net would plan for the training cases, in the checkpoints: asa-export --format
            # nnunet-results states it in its plans without the data
            run.resolved[TRAINING_SPACING] = spacing

    def datasets(self, run: FinetuneRun, splits: Mapping[str, list]) -> tuple[Any, Any | None]:
        cfg, data = run.cfg, run.cfg.data
        percentiles = tuple(data.percentiles)  # the checkpoint records them: asa-predict preprocesses alike
        train = build_segmentation_dataset(
            splits["train"], self.task, train=True, crop=run.crop, store=data.store, percentiles=percentiles,
            samples_per_case=cfg.task.samples_per_case, seed=cfg.seed, regions=self.regions, **self.lattice,
            sampling=cfg.task.sampling, pos_fraction=cfg.task.foreground_fraction, oversampling=cfg.task.oversampling,
        )
        val = (build_segmentation_dataset(splits["val"], self.task, train=False, store=data.store,
                                          percentiles=percentiles,
                                          regions=self.regions if capabilities(run.model).regions else None)
               if splits["val"] else None)
        return train, val

    def validator(self, run: FinetuneRun, dataset: Any):
        return DiceValidator(dataset, task=self.task, roi_size=(run.crop,) * 3, env=run.env,
                             overlap=run.cfg.task.overlap, sw_batch_size=int(run.cfg.task.sw_batch_size))

    def engine_options(self, run: FinetuneRun, train_dataset: Any, val_dataset: Any | None) -> dict[str, Any]:
        panel_fn = None
        if val_dataset is not None and run.env.is_main and run.config.panel_every:
            panel_fn = make_segmentation_panel_fn(val_dataset[0], multilabel=self.task.multilabel,
                                                  roi_size=(run.crop,) * 3, overlap=run.cfg.task.overlap,
                                                  sw_batch_size=int(run.cfg.task.sw_batch_size))
        collate = None
        if run.cfg.task.samples_per_case > 1:
            from monai.data import list_data_collate

            collate = list_data_collate
        return dict(collate_fn=collate, panel_fn=panel_fn)

    def training_step(self, run: FinetuneRun):
        settings = run.cfg.task
        criterion = SegmentationLoss(self.task.multilabel, focal_weight=settings.focal_weight,
                                     focal_beta=settings.focal_beta, dice_background=settings.dice_background)
        if capabilities(run.model).deep_supervision:  # training outputs at several resolutions (model=dynunet)
            criterion = DeepSupervisionLoss(criterion, capabilities(run.model).deep_supervision)
        return segmentation_step(criterion)

    def best_metric(self, run: FinetuneRun) -> str:
        return "mean validation Dice"

    # --- the other jobs ------------------------------------------------------------------------------
    def load_predictor(self, cfg: PredictConfig, state: dict, checkpoint: Path, setup: PredictSetup) -> None:
        self.predictor = Predictor.from_checkpoint(checkpoint, device=setup.device, amp_dtype=setup.amp_dtype,
                                                   compile=setup.compile, state=state)
        self.training_spacing = (state.get("config") or {}).get(TRAINING_SPACING)

    def prediction_cases(self, cfg: PredictConfig, inputs: list[str] | str) -> list:
        return gather_cases(inputs, self.predictor.task, layout=cfg.layout, on_bad_case=cfg.on_bad_case)

    def prediction_files(self, out: Path) -> list[str]:
        # a killed write's temporary (.<case>.nii.gz.<random>.tmp.nii.gz) is no prediction: the next start removes it
        return [p.name for p in out.iterdir() if is_nifti(p) and not is_temporary(p)]

    def describe(self, cfg: PredictConfig, cases: list, setup: PredictSetup) -> str:
        if note := channel_note(cases, self.predictor.task):
            print(f"[asa] note: {note}", file=sys.stderr, flush=True)
        if note := spacing_note(cases, self.training_spacing):
            print(f"[asa] note: {note}", file=sys.stderr, flush=True)
        return (f"[asa] predicting {len(cases)} case(s) on {setup.device}, precision {amp_name(setup.amp_dtype)} "
                f"(amp={cfg.amp}), {setup.threads} CPU threads{', torch.compile' if setup.compile else ''}"
                f"{f'; the {cfg.subset} split of {cfg.split_file}' if cfg.split_file is not None else ''}")

    def prediction_settings(self, cfg: PredictConfig, setup: PredictSetup) -> dict[str, Any]:
        return {"overlap": cfg.overlap, "tta": cfg.tta, "tta_axes": list(cfg.tta_axes) if cfg.tta else [],
                "amp": amp_name(setup.amp_dtype)}

    def predict_case(self, cfg: PredictConfig, case: Any, out: Path, setup: PredictSetup) -> list[Path]:
        """One label file per case (and its probabilities with ``save_probabilities``)."""
        return predict_case(self.predictor, case, out, overlap=cfg.overlap, sw_batch_size=setup.sw_batch_size,
                            tta_axes=list(cfg.tta_axes) if cfg.tta else [], save_probabilities=cfg.save_probabilities)

    def summary(self, out: Path, written: int, kept: int) -> str:
        task = self.predictor.task
        return (f"[asa] wrote {written} prediction(s) ({task.name}: {', '.join(task.output_names)}) to {out}"
                f"{f', kept {kept} from before' if kept else ''}")

    def evaluate(self, cfg: EvaluateConfig) -> dict:
        """Score ``<pred>/<case>.nii.gz`` against the labels of a segmentation task (Dice, HD95, NSD per
        region or class; ``per_case.csv`` and ``summary.json`` under ``output``), and the encoder-reliance
        diagnostic of ``reliance.checkpoint``."""
        data = cfg.data
        root, layout = dataset_root(data)
        task = get_task(data.task, root=root)
        cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
        out = Path(cfg.output).absolute()
        if cfg.pred is None and cfg.reliance.checkpoint is None:
            raise ValueError("asa-evaluate needs pred=DIR (predictions to score) or reliance.checkpoint=CKPT "
                             "(the encoder-reliance diagnostic of a fine-tuned checkpoint), or both")
        summary: dict = {}
        if cfg.pred is not None:
            tolerance = cfg.nsd_tolerance
            tolerance = list(tolerance) if isinstance(tolerance, ListConfig) else tolerance
            tolerances = nsd_tolerances(tolerance, task.output_names, option="nsd_tolerance")
            pred_dir = Path(str(cfg.pred)).expanduser()
            if not pred_dir.is_dir():
                raise FileNotFoundError(f"pred={pred_dir}: no such folder")
            missing: list[str] = []
            pairs = match_predictions(pred_dir, cases, on_missing=cfg.on_missing, missing=missing)
            if not pairs:
                raise FileNotFoundError(f"pred={pred_dir}: no prediction for any of the {len(cases)} case(s) "
                                        f"(expected <case_id>.nii.gz, e.g. {cases[0].id}.nii.gz)")
            summary = evaluate_cases(pairs, task, num_workers=cfg.num_workers, progress=True,
                                     hd95_convention=str(cfg.hd95), nsd_tolerance=tolerances)
            # what was left out is part of the result: a mean over 1 of 2 cases is not the mean over 2
            summary["n_expected"] = len(cases)
            summary["skipped"] = [{"id": cid, "reason": f"no prediction in {pred_dir} (on_missing=skip)"}
                                  for cid in missing]
            write_results(summary, out)
            if missing:
                print(f"[asa] warning: {len(missing)} of {len(cases)} case(s) have no prediction and are not scored "
                      f"(on_missing=skip; listed in summary.json): {', '.join(missing[:10])}"
                      f"{' ...' if len(missing) > 10 else ''}", file=sys.stderr, flush=True)
            print(f"[asa] {task.name}: {summary['n_cases']} of {len(cases)} case(s) scored; HD95 convention {cfg.hd95}; "
                  f"NSD tolerance " + ", ".join(f"{n} {t:g} mm" for n, t in tolerances.items()))
            for name in task.output_names:
                s = summary[name]
                print(f"  {name:>4}: Dice {s['Dice']['mean']:.4f} (median {s['Dice']['median']:.4f}), "
                      f"HD95 {s['HD95']['mean']:.2f} mm (median {s['HD95']['median']:.2f}), "
                      f"NSD {s['NSD']['mean']:.4f} (median {s['NSD']['median']:.4f})")
            print(f"  per-case results: {out / 'per_case.csv'}; summary: {out / 'summary.json'}", flush=True)
        if cfg.reliance.checkpoint is not None:
            summary["reliance"] = _reliance(cfg, task, cases, out)
        return summary

    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        """The labelled cases; each encoder's tokens on its patch grid, fitted to the label fractions of
        the patches (`asa.eval.probe_cv.token_probes`)."""
        data = cfg.data
        task = get_task(data.task, root=root)
        cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split([c for c in cases if c.label is not None], cfg.split_file, cfg.subset,
                               where=str(root))
        target = {"task": task.name, "kind": "voxel", "classes": list(task.output_names)}
        channels = match_channels(cfg.channels, task.channels, option="channels", where=f"the {task.name} task")
        device = resolve_device(cfg.device)
        prepared: dict = {}  # probe sets per encoder input size and token stride, built once

        def score(enc: FrozenEncoder, groups: Sequence[str], common: Mapping) -> tuple[dict, torch.Tensor]:
            key = (enc.size, enc.stride)
            if key not in prepared:
                if len(set(enc.size)) != 1:
                    raise OptionError(f"{enc.name}: voxel-label probes need a cubic input, got {list(enc.size)}")
                prepared[key] = build_probe_set(cases, task, size=enc.size[0], channels=channels,
                                                patch_size=enc.stride)
            probe_set = prepared[key]
            tokens = torch.cat([enc.tokens(probe_set.images[i:i + cfg.batch_size].to(device)).cpu()
                                for i in range(0, probe_set.images.shape[0], cfg.batch_size)])
            return token_probes(tokens, probe_set, groups=groups, **common), tokens

        return ProbeTargets(cases, target, "voxel", score)


def _reliance(cfg: EvaluateConfig, task, cases: list, out: Path) -> dict:
    """Encoder-reliance diagnostic of ``reliance.checkpoint`` on ``cases``; writes reliance files under ``out``."""
    ckpt = Path(str(cfg.reliance.checkpoint)).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"reliance.checkpoint={ckpt}: no such file (a best.pt / last.pt of asa-finetune)")
    device = cfg.reliance.device
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    predictor = Predictor.from_checkpoint(ckpt, device=device)
    if predictor.task.name != task.name or predictor.task.output_names != task.output_names:
        raise ValueError(f"reliance.checkpoint={ckpt} was trained on task {predictor.task.name} "
                         f"{list(predictor.task.output_names)}, but data={cfg.data.name} is {task.name}")
    result = encoder_reliance(predictor, cases, overlap=cfg.reliance.overlap, progress=True)
    csv_path, json_path = write_reliance(result, out)
    print(format_reliance(result))
    print(f"  per-case: {csv_path}; summary: {json_path}", flush=True)
    return result
