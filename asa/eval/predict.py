"""Prediction over cases: rebuild the network from a fine-tuning checkpoint, segment, write NIfTI."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from asa.data import (
    Case,
    RegionSource,
    Task,
    detect_layout,
    discover,
    preprocess_for_inference,
    region_map_for_inference,
    save_volume,
)
from asa.data.preprocessing import PERCENTILES, run_percentiles
from asa.eval.inference import predict_volume
from asa.formats.onnx import OnnxNetwork, onnx_state
from asa.io import Volume, VolumeError, is_nifti, is_temporary, load_checkpoint, prediction_path, probabilities_path, strip_nifti
from asa.models import build_network, capabilities, channels_last_inference, compile_blocks, input_size
from asa.models.registry import NETWORK_KINDS, current_spec
from asa.models.units import Units

CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net style <case>_0000


@dataclass
class Predictor:
    """A fine-tuned network with its task and inference settings."""

    model: nn.Module
    task: Task
    roi_size: tuple[int, int, int]
    device: torch.device
    amp_dtype: torch.dtype | None = None
    regions: RegionSource | None = None  # how to make the region map of a case (region attention networks)
    percentiles: tuple[float, float] = PERCENTILES  # the intensity clip it was trained with (data.percentiles)
    units: int = 1  # the networks ``model`` runs as one (`of_units`), their outputs side by side on the channel axis

    @classmethod
    def of_units(cls, predictors: Sequence[Predictor]) -> Predictor:
        """``predictors`` (one network architecture, task and inference settings: e.g. a fused study draw's runs) as
        one: their networks one vmapped forward (`asa.models.units.Units`), each case preprocessed, cut into windows
        and blended once; it returns their probabilities side by side, predictor k's at channels k · K to
        k · K + K - 1 (`predict_volume`'s ``units``). Predictors that differ in anything but their weights are
        refused; one predictor is itself (its network dense, not vmapped)."""
        if len(predictors) == 1:
            return predictors[0]
        first = predictors[0]
        settings = [dataclasses.replace(p, model=first.model) for p in predictors]
        if odd := [k for k, p in enumerate(settings) if p != settings[0] or p.units != 1]:
            raise ValueError(f"predictors {odd} differ from predictor 0 in their task or inference settings (or "
                             "run units already): only networks of one task and settings predict as one")
        return dataclasses.replace(first, model=Units.of([p.model for p in predictors]), units=len(predictors))

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: torch.device, amp_dtype: torch.dtype | None = None,
                        compile: bool = False, state: dict | None = None) -> "Predictor":
        """Rebuild the network (from the checkpoint's network spec) and the task recorded in a
        fine-tuning checkpoint (``asa-finetune`` output); ``compile`` applies ``torch.compile`` to
        its blocks (:func:`asa.models.compile_blocks`). With bf16 on a CPU the network is laid out
        channels-last (:func:`asa.models.channels_last_inference`). ``state``: the file's content, when
        the caller has read it already. Cases are preprocessed as the run trained: its ``data.percentiles``
        (`asa.data.preprocessing.run_percentiles`; a checkpoint saved before the option: 0.5-99.5)."""
        if state is None:  # a model.onnx of asa-export --format onnx carries its record in its metadata
            state = onnx_state(path) if Path(path).suffix == ".onnx" else load_checkpoint(path)
        config = state.get("config") or {}
        spec = state.get("network")
        outputs = config.get("outputs", config.get("task"))  # what it predicts (an earlier version's: task)
        if spec is None or NETWORK_KINDS.get(current_spec(spec)["arch"]) == "pretraining" or outputs is None:
            raise ValueError(f"checkpoint {path} is not a fine-tuning checkpoint (no segmentation network spec and "
                             "task recorded); asa-predict needs the best.pt or last.pt written by asa-finetune")
        task = Task.from_dict(outputs)
        if "onnx" in state:  # model.onnx of asa-export --format onnx (`asa.formats.onnx.onnx_state`)
            model = OnnxNetwork(path)
            if device.type != "cpu" or amp_dtype is not None:  # said, not done silently
                print(f"[asa] note: {path} runs in onnxruntime on the CPU in fp32: device={device.type} and "
                      f"amp={'off' if amp_dtype is None else str(amp_dtype).removeprefix('torch.')} are not used",
                      file=sys.stderr, flush=True)
            device, amp_dtype = torch.device("cpu"), None
        else:
            model = build_network(spec)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as err:
                raise ValueError(f"checkpoint {path}: weights do not fit the recorded network: {err}") from err
        patch = input_size(model)[0]
        model = model.to(device).eval()
        if device.type == "cpu" and amp_dtype is not None and "onnx" not in state:
            channels_last_inference(model)  # bf16 on CPU: channels-last convolutions are faster
        if compile and "onnx" not in state:
            compile_blocks(model)
        regions = None
        if capabilities(model).regions:
            try:  # the recorded source; one made from the labels is refused (it was the network's input)
                regions = RegionSource.from_config(config["data"]["regions"],
                                                   needed_by=["the network's region attention"],
                                                   network="the network's region attention")
            except ValueError as err:
                raise ValueError(f"checkpoint {path}: {err}. Fine-tune it again with such a source") from err
        try:
            percentiles = run_percentiles(config)
        except ValueError as err:
            raise ValueError(f"checkpoint {path}: {err}") from None
        return cls(model, task, (patch,) * 3, device, amp_dtype, regions, percentiles)

    def regions_of(self, case: Case) -> torch.Tensor | None:
        """The region map [1, X, Y, Z] a network with region attention needs for ``case``, else None."""
        return None if self.regions is None else region_map_for_inference(case, self.task, self.regions,
                                                                            percentiles=self.percentiles)

    def preprocess(self, case: Case) -> tuple[torch.Tensor, Volume]:
        """``case`` as the network was trained on it: image [C, X, Y, Z] and its reference Volume
        (`asa.data.preprocess_for_inference` with the run's percentiles)."""
        return preprocess_for_inference(case, self.task, percentiles=self.percentiles)

    def __call__(self, image: torch.Tensor, *, overlap: float = 0.5, sw_batch_size: int | str = "auto",
                 tta_axes: Sequence[int] = (), centre: Sequence[float] | None = None,
                 regions: torch.Tensor | None = None) -> torch.Tensor:
        """image [C, X, Y, Z] -> probabilities [K, X, Y, Z] (CPU, float32); ``centre``: the brain
        centre recorded at preprocessing (the brain frame's centre; see `predict_volume`); ``regions``:
        the image's region map [1, X, Y, Z], for a network with region attention."""
        return predict_volume(self.model, image, roi_size=self.roi_size, multilabel=self.task.multilabel,
                              overlap=overlap, sw_batch_size=sw_batch_size, tta_axes=tta_axes,
                              device=self.device, amp_dtype=self.amp_dtype, centre=centre, regions=regions,
                              units=self.units)


def cases_from_files(paths: Sequence[Path], task: Task) -> list[Case]:
    """Cases from plain NIfTI files: one file per case for one-channel tasks, else nnU-Net naming
    ``<case>_0000.nii.gz`` … ``<case>_000K.nii.gz`` in the task's channel order. For a one-channel task, a
    ``<case>_000K`` (K > 0) beside its ``<case>_0000`` is refused: another channel of one case, not another case."""
    groups: dict[str, dict[int, Path]] = {}
    zeros = {c["case"]: p for p in paths if (c := CHANNEL.match(strip_nifti(Path(p).name))) and c["channel"] == "0000"}
    for path in sorted(paths):
        if not is_nifti(path):
            raise ValueError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
        stem = strip_nifti(path.name)
        c = CHANNEL.match(stem)
        if c and len(task.channels) == 1 and c["channel"] != "0000" and c["case"] in zeros:
            raise ValueError(f"{path}: channel {int(c['channel'])} of case {c['case']!r} (beside "
                             f"{Path(zeros[c['case']]).name}, its channel 0), but the model reads one channel "
                             f"({task.channels[0]}): give {Path(zeros[c['case']]).name} alone, or predict with a model "
                             f"trained on {int(c['channel']) + 1} or more channels")
        if c and (len(task.channels) > 1 or c["channel"] == "0000"):
            case, channel = c["case"], int(c["channel"])
        else:  # a one-channel scan named freely
            case, channel = stem, 0
        if channel in groups.setdefault(case, {}):
            raise ValueError(f"{path}: case {case!r} channel {channel} given twice")
        groups[case][channel] = path
    cases = []
    for case, files in groups.items():
        if sorted(files) != list(range(len(task.channels))):
            raise ValueError(
                f"case {case!r}: found channels {sorted(files)} in {[str(p) for p in files.values()]}; task "
                f"{task.name} needs {len(task.channels)} ({', '.join(task.channels)}) named {case}_0000.nii.gz, ..."
            )
        cases.append(Case(id=case, images={name: files[i] for i, name in enumerate(task.channels)}, label=None, meta={}))
    return cases


def _with_channels(cases: list[Case], task: Task, where: str) -> list[Case]:
    """``cases``, each holding every channel ``task`` reads (a layout's cases share its channels); else refused
    (``ValueError``, before any case is predicted) naming the channels read and found."""
    lacking = {c.id: [ch for ch in task.channels if ch not in c.images] for c in cases}
    lacking = {cid: missing for cid, missing in lacking.items() if missing}
    if not lacking:
        return cases
    found = sorted({name for c in cases for name in c.images}, key=str)
    raise ValueError(f"{where}: the checkpoint's task {task.name} reads {len(task.channels)} channel(s) "
                     f"({', '.join(task.channels)}); {len(lacking)} of {len(cases)} case(s) lack some (e.g. "
                     f"{next(iter(lacking))}: missing {', '.join(next(iter(lacking.values())))}; the inputs hold "
                     f"{', '.join(found) or 'none'}). Predict with a checkpoint trained on these channels")


def gather_cases(inputs: str | Path | Sequence[str | Path], task: Task, layout: str = "auto",
                 on_bad_case: str = "error") -> list[Case]:
    """Cases to predict from a dataset folder (any supported layout), a folder of NIfTI files, or files."""
    items = [Path(str(p)).expanduser() for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    missing = [str(p) for p in items if not p.exists()]
    if missing:
        raise FileNotFoundError(f"input: no such file or folder: {', '.join(missing)}")
    if len(items) == 1 and items[0].is_dir():
        root = items[0]
        if layout == "auto":
            try:
                layout = detect_layout(root)
            except ValueError:
                layout = "files"
        if layout != "files":
            cases = discover(layout, root, require_labels=False, validate="header", on_bad_case=on_bad_case)
            return _with_channels(cases, task, f"input={root} (layout {layout})")
        files = sorted(p for p in root.iterdir() if is_nifti(p) and not is_temporary(p))
        if not files:
            raise FileNotFoundError(f"input {root}: no dataset layout recognised and no .nii/.nii.gz files in it")
        return cases_from_files(files, task)
    return cases_from_files(items, task)


def predict_case(predictor: Predictor, case: Case, output: Path, *, overlap: float = 0.5,
                 sw_batch_size: int | str = "auto", tta_axes: Sequence[int] = (),
                 save_probabilities: bool = False) -> list[Path]:
    """Segment one case and write ``<output>/<case_id>.nii.gz`` in the input's own space (labels in the
    dataset's own values), and with ``save_probabilities`` ``<case_id>_probabilities.nii.gz`` ([X, Y, Z, K]
    floats); returns the files, the label file first. Files are written atomically (a file of the same name
    is replaced: `asa.api.machinery.prediction` decides which folder may be written). A case whose volumes cannot be
    used raises `VolumeError` (truncated, not NIfTI, wrong dimensionality, NaN/Inf, all zeros)."""
    image, reference = predictor.preprocess(case)
    regions = predictor.regions_of(case)  # region attention networks
    probs = predictor(image, overlap=overlap, sw_batch_size=sw_batch_size, tta_axes=tta_axes,
                      centre=reference.meta.get("brain_centre"), regions=regions)
    target = prediction_path(output, case.id)
    save_volume(predictor.task.prediction_to_label(probs), reference, target)
    files = [target]
    if save_probabilities:
        files.append(save_volume(probs.permute(1, 2, 3, 0).numpy(), reference, probabilities_path(output, case.id)))
    return files


def predict_cases(
    predictor: Predictor,
    cases: Sequence[Case],
    output: str | Path,
    *,
    overlap: float = 0.5,
    sw_batch_size: int | str = "auto",
    tta_axes: Sequence[int] = (),
    save_probabilities: bool = False,
    progress: bool = True,
    on_bad_case: str = "error",
    skipped: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """`predict_case` for every case into ``output``; returns the label files written.

    A case whose volumes cannot be used (`VolumeError`) stops the batch with ``on_bad_case="error"``; with
    ``"skip"`` the others are predicted and ``(case id, reason)`` is appended to ``skipped``."""
    if on_bad_case not in ("error", "skip"):
        raise ValueError(f"on_bad_case={on_bad_case!r}: expected 'error' or 'skip'")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        try:
            files = predict_case(predictor, case, out_dir, overlap=overlap, sw_batch_size=sw_batch_size,
                                 tta_axes=tta_axes, save_probabilities=save_probabilities)
        except VolumeError as err:
            if on_bad_case == "error":
                raise VolumeError(err.path, f"{err.fault} (case {case.id}; on_bad_case=skip predicts the other "
                                            "cases)") from err
            if skipped is not None:
                skipped.append((case.id, str(err)))
            continue
        written.append(files[0])
    return written

