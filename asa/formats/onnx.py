"""``asa-export --format onnx``: the fine-tuned segmenter as ``model.onnx``, written and run here.

Writing: the eval-mode forward pass on one window batch, traced by torch's TorchScript ONNX exporter at `OPSET`
(inputs ``image`` [B, C, *window] float32, ``offsets`` [B, 3] int64 for a brain-frame network, ``regions``
[B, 1, *window] int64 for region attention; output ``logits`` [B, K, *window]; only the batch axis is dynamic),
then checked by `onnx.checker` and against torch's logits on windows the trace never saw (`LOGIT_TOLERANCE`).
Running: `OnnxNetwork` stands where the torch network stands in asa-predict's sliding windows; the file's metadata
(`ONNX_METADATA_KEY`) carries the run config and network spec, as ``segmenter.pt`` does.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asa.formats.base import SEGMENTER, Format, Job, Part, register_format
from asa.formats.card import provenance, provenance_card
from asa.io import atomic_write_bytes, atomic_write_text
from asa.io.hub import CARD_FILE
from asa.models import build_network, capabilities, input_size
from asa.models.declared import Capabilities

__all__ = ["LOGIT_TOLERANCE", "ONNX", "ONNX_FILE", "ONNX_FORMAT", "ONNX_METADATA_KEY", "OPSET", "OnnxNetwork",
           "export_onnx", "onnx_card", "onnx_record", "onnx_state"]

ONNX_FORMAT = "asa.onnx_segmenter"
ONNX_METADATA_KEY = "asa"  # the model's metadata_props entry holding the JSON record
INPUTS = ("image", "offsets", "regions")
OUTPUT = "logits"

ONNX_FILE = "model.onnx"
OPSET = 17  # onnxruntime >= 1.14 runs it; the TorchScript exporter's most tested opset
LOGIT_TOLERANCE = 1e-3  # max |logit_ort - logit_torch| / max(1, max |logit_torch|) on the check windows
CHECK_WINDOWS = 3  # the batch of the check (the trace runs on 2): the dynamic axis exercised


class _Window(nn.Module):
    """The network's forward pass with the inputs as positional arguments, named as the graph names them."""

    def __init__(self, net: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.inputs = net, inputs

    def forward(self, image: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.net(image, **dict(zip(self.inputs[1:], extra)))


def _and_symbolic(g: Any, a: Any, b: Any) -> Any:
    """``aten::__iand_`` (in-place ``&=`` on the attention masks) as ONNX ``And``: the exporter has no rule for it."""
    return g.op("And", a, b)


def _sample(inputs: tuple[str, ...], batch: int, channels: int, size: tuple[int, ...], grid: tuple[int, ...] | None,
            seed: int) -> tuple[torch.Tensor, ...]:
    """Inputs of ``batch`` windows: a normal image, offsets within a reference grid of either side (negative
    included: windows before the reference grid's origin), region labels 0..3."""
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(batch, channels, *size, generator=gen)]
    if "offsets" in inputs:
        span = max(grid or (1, 1, 1))
        out.append(torch.randint(-span, span + 1, (batch, 3), generator=gen))
    if "regions" in inputs:
        out.append(torch.randint(0, 4, (batch, 1, *size), generator=gen))
    return tuple(out)


def export_onnx(segmenter: Mapping[str, Any], *, provenance: Mapping[str, Any],
                source: str) -> tuple[bytes, dict[str, Any]]:
    """(``model.onnx``, its record) of a fine-tuned segmenter (as ``segmenter.pt`` holds it), checked and measured,
    the record and ``provenance`` in the model's metadata; refused (``ValueError`` naming ``source``) by the
    exporter, the checker or the parity check."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as err:
        raise ValueError(f"--format onnx needs onnx and onnxruntime (pip install 'asa[onnx]'): {err}") from err
    net = build_network(segmenter["network"])
    net.load_state_dict(segmenter["model"])
    net.eval()
    declared = capabilities(net)
    size = input_size(net)
    arch = segmenter["network"]["arch"]
    inputs = ("image", *(["offsets"] if declared.offsets else []), *(["regions"] if declared.regions else []))
    channels = int(getattr(net, "in_channels", None) or segmenter["network"]["kwargs"].get("in_channels", 1))
    grid = declared.reference_grid
    wrapped = _Window(net, inputs).eval()
    traced = _sample(inputs, 2, channels, size, grid, seed=0)
    torch.onnx.register_custom_op_symbolic("aten::__iand_", _and_symbolic, OPSET)
    buffer = io.BytesIO()
    try:
        # no_grad: the attention takes its plain SDPA path, which the exporter traces (the CPU window kernel's
        # autograd function is for training); the warnings are the tracer's on shape checks that stay constant
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, traced, buffer, dynamo=False, opset_version=OPSET, input_names=list(inputs),
                              output_names=[OUTPUT], dynamic_axes={n: {0: "windows"} for n in (*inputs, OUTPUT)})
    except Exception as err:  # the exporter's UnsupportedOperatorError, SymbolicValueError, ...
        raise ValueError(f"--format onnx: {source} holds a {arch!r} network that torch's ONNX exporter (opset "
                         f"{OPSET}) cannot trace: {str(err).strip().splitlines()[0]}") from err
    model = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:
        raise ValueError(f"--format onnx: the graph of {source}'s {arch!r} network fails onnx.checker: "
                         f"{str(err).strip().splitlines()[0]}") from err
    parity = _parity(ort, buffer.getvalue(), wrapped, inputs, channels, size, grid, source=source, arch=arch)
    record = {"format": ONNX_FORMAT, "version": 1, "opset": OPSET, "inputs": list(inputs), "output": OUTPUT,
              "dynamic_axes": {n: {"0": "windows"} for n in (*inputs, OUTPUT)}, "img_size": list(size),
              "capabilities": {"offsets": declared.offsets, "regions": declared.regions,
                               "patch_size": declared.patch_size,
                               "reference_grid": None if grid is None else list(grid)},
              "network": dict(segmenter["network"]), "config": dict(segmenter["config"]),
              "step": int(segmenter.get("step") or 0), "parity": parity, "provenance": dict(provenance),
              "software": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}}
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(record, default=str)
    model.producer_name = "asa"
    model.doc_string = f"asa fine-tuned {arch} segmenter (see metadata {ONNX_METADATA_KEY!r})"
    return model.SerializeToString(), record


def _parity(ort: Any, data: bytes, wrapped: nn.Module, inputs: tuple[str, ...], channels: int,
            size: tuple[int, ...], grid: tuple[int, ...] | None, *, source: str, arch: str) -> dict[str, Any]:
    """onnxruntime's logits against torch's on `CHECK_WINDOWS` windows the trace never saw; refused beyond
    :data:`LOGIT_TOLERANCE`. Returns the measured maximum absolute and relative differences."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    check = _sample(inputs, CHECK_WINDOWS, channels, size, grid, seed=1)
    with torch.no_grad():
        expected = wrapped(*check).float().numpy()
    got = session.run([OUTPUT], {n: t.numpy() for n, t in zip(inputs, check)})[0]
    diff = float(np.abs(got - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if not diff / scale <= LOGIT_TOLERANCE:
        raise ValueError(f"--format onnx: onnxruntime's logits of {source}'s {arch!r} network differ from torch's by "
                         f"{diff:.3g} (relative {diff / scale:.3g} > {LOGIT_TOLERANCE}) on windows the trace did not "
                         "see: the trace does not generalise (a value baked in)")
    return {"windows": CHECK_WINDOWS, "max_abs_logit_diff": diff, "max_abs_logit": float(np.abs(expected).max()),
            "relative": diff / scale, "tolerance": LOGIT_TOLERANCE}


def onnx_card(record: Mapping[str, Any]) -> str:
    """The model card's section on ``model.onnx``: its inputs, opset and dynamic axis, the parity measured at
    export, and the asa-predict line that runs it."""
    parity = record["parity"]
    shapes = {"image": "[windows, C, " + ", ".join(map(str, record["img_size"])) + "] float32",
              "offsets": "[windows, 3] int64: each window's origin in patches from the brain frame's reference grid",
              "regions": "[windows, 1, " + ", ".join(map(str, record["img_size"])) + "] int64: the region map"}
    return "\n".join([
        "", "## ONNX", "",
        f"`{ONNX_FILE}` is the fine-tuned segmenter as an ONNX graph (opset {record['opset']}, one window batch; "
        "the batch axis `windows` is the only dynamic one). Inputs:", "",
        *(f"- `{name}` {shapes[name]}" for name in record["inputs"]),
        f"- output `{record['output']}` [windows, K, " + ", ".join(map(str, record["img_size"])) + "] float32", "",
        f"At export onnx.checker passed and onnxruntime's logits differed from torch's by at most "
        f"{parity['max_abs_logit_diff']:.2g} (logits up to {parity['max_abs_logit']:.3g}; tolerance "
        f"{parity['tolerance']} relative) on {parity['windows']} windows. asa's sliding windows, blending and "
        "output records run it on the CPU with onnxruntime:", "",
        "```", f"asa-predict checkpoint=path/to/this/folder/{ONNX_FILE} input=IMAGES output=PREDICTIONS", "```", "",
        f"Its metadata (`{ONNX_METADATA_KEY}`) carries the run config, the network spec and the provenance "
        "(encoder, pretraining cohort digest, licence).", ""])


def _session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``; refused, naming the extra, when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ValueError(f"checkpoint={path}: running an ONNX segmenter needs onnxruntime "
                         "(pip install 'asa[onnx]')") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ValueError(f"checkpoint={path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from err


def _record_of(session: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The asa record in a session's model metadata; refused, naming the file, for an ONNX file asa did not write."""
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or record.get("format") != ONNX_FORMAT:
        raise ValueError(f"checkpoint={path}: an ONNX file without asa's record (metadata {ONNX_METADATA_KEY!r}); "
                         "asa-predict runs the model.onnx that asa-export --format onnx writes")
    return record


def onnx_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record ``asa-export --format onnx`` stored in ``path``: ``config`` (the run config), ``network`` (the
    spec), ``capabilities``, ``img_size``, ``inputs``, ``opset``, ``parity`` and ``provenance``."""
    return _record_of(_session(path, threads=1), path)


def onnx_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's content as asa-predict reads it, for an ONNX file: its run ``config`` and ``network`` spec,
    and ``onnx`` (the whole record), which tells `asa.eval.predict.Predictor` to run the file instead of torch."""
    record = onnx_record(path)
    return {"config": record["config"], "network": record["network"], "onnx": record,
            "step": int(record.get("step") or 0)}


class OnnxNetwork(nn.Module):
    """The network of an ONNX file as `predict_volume` calls it: ``forward(window, offsets=None, regions=None)`` ->
    logits [B, K, X, Y, Z] float32 on the window's device, computed by onnxruntime on the CPU.

    Args:
        path: the ``model.onnx`` asa-export wrote.
        threads: onnxruntime's intra-op threads (None: torch's current count, as asa-predict's ``threads`` set it).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = _session(path, threads=threads or torch.get_num_threads())
        self.record = _record_of(self.session, path)
        caps: Mapping[str, Any] = self.record["capabilities"]
        grid = caps.get("reference_grid")
        self.capabilities = Capabilities(offsets=bool(caps.get("offsets")), regions=bool(caps.get("regions")),
                                         patch_size=caps.get("patch_size"),
                                         reference_grid=None if grid is None else tuple(int(g) for g in grid))
        self.img_size = tuple(int(s) for s in self.record["img_size"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None,
                regions: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"image": np.ascontiguousarray(x.detach().float().cpu().numpy())}
        if "offsets" in self.inputs:
            if offsets is None:  # as the torch network takes it: the crop is the reference box (offset 0)
                offsets = torch.zeros(x.shape[0], 3, dtype=torch.int64)
            feeds["offsets"] = offsets.detach().cpu().long().numpy()
        if "regions" in self.inputs:
            if regions is None:
                raise ValueError(f"{self.path}: the network reads a region map (regions=...), none was given")
            feeds["regions"] = regions.detach().cpu().long().numpy()
        (logits,) = self.session.run([OUTPUT], feeds)
        return torch.from_numpy(logits).to(x.device)


class Onnx(Format):
    """``model.onnx`` beside the model folder; of a network without an encoder (DynUNet), alone with its own card."""

    name, level, files = "onnx", SEGMENTER, (ONNX_FILE,)
    about = "the folder and model.onnx, which asa-predict runs in onnxruntime"

    def part(self, job: Job) -> Part:
        assert job.segmenter is not None  # asa-export refuses an encoder alone first
        data, record = export_onnx(job.segmenter, provenance=provenance(job.config, job.segmenter["config"]),
                                   source=str(job.source))
        files: dict[str, Any] = {ONNX_FILE: lambda path: atomic_write_bytes(path, data)}
        if job.export is not None:
            return Part(files, onnx_card(record))
        arch = job.segmenter["network"]["arch"]  # no encoder, no model folder: model.onnx and its own card
        card = "\n".join([*provenance_card(record["provenance"], library="asa", tags=("onnx", arch),
                                            title=f"asa segmenter ({arch})"), onnx_card(record)])
        return Part({**files, CARD_FILE: lambda path: atomic_write_text(path, card)})


ONNX = register_format(Onnx())
