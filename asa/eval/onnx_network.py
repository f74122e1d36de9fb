"""A segmenter exported as ONNX (``model.onnx`` of ``asa-export --format onnx``), run by onnxruntime on the CPU.

`OnnxNetwork` stands where the torch network stands in `asa.eval.inference.predict_volume`: it declares the
capabilities the exported network declared (its lattice, its brain-frame offsets) and its window size, so the
windows, their patch offsets, the Gaussian blending, the flips and the output records are asa's own, unchanged;
only each window batch's forward pass runs in onnxruntime. The file carries what rebuilds the prediction as
``segmenter.pt`` does (the run config, the network spec) in its metadata (`ONNX_METADATA_KEY`), read without torch
weights by :func:`onnx_record`.

The graph's inputs: ``image`` [B, C, X, Y, Z] float32 (one window batch), ``offsets`` [B, 3] int64 (the windows'
origins in patches from the reference grid, for a brain-frame network), ``regions`` [B, 1, X, Y, Z] int64 (a network
with region attention); its output ``logits`` [B, K, X, Y, Z] float32. Only the batch axis is dynamic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asa.models.declared import Capabilities

__all__ = ["ONNX_FORMAT", "ONNX_METADATA_KEY", "OnnxNetwork", "onnx_record", "onnx_state"]

ONNX_FORMAT = "asa.onnx_segmenter"
ONNX_METADATA_KEY = "asa"  # the model's metadata_props entry holding the JSON record
INPUTS = ("image", "offsets", "regions")
OUTPUT = "logits"


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
