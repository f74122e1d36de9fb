"""``asa-export RUN OUT --format onnx``: the fine-tuned segmenter as ``model.onnx`` beside the model card.

The graph is the network's eval-mode forward pass on one window batch, traced by torch's TorchScript-based ONNX
exporter at opset `OPSET`: inputs ``image`` [B, C, *window] float32, ``offsets`` [B, 3] int64 for a network that
places its windows on the brain frame (the SW-ViT U-Net: the windows' patch offsets from the reference grid, as
asa's sliding windows hand them), ``regions`` [B, 1, *window] int64 for one with region attention; output
``logits`` [B, K, *window] float32. Only the batch axis (``windows``) is dynamic: the windows are the network's
crop, as in training. asa-predict runs the file (`asa.eval.onnx_network.OnnxNetwork`) through asa's own sliding
windows, blending and output records.

Before anything is written the graph is checked: `onnx.checker` (full check, shapes inferred), then onnxruntime's
logits against torch's on windows the trace never saw (another batch size, other offsets), within
:data:`LOGIT_TOLERANCE`. A network the exporter cannot trace (an op ONNX lacks) or whose trace does not generalise
(a value baked in) is refused in one line naming it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from asa.eval.onnx_network import INPUTS, ONNX_FORMAT, ONNX_METADATA_KEY, OUTPUT
from asa.models import build_network, capabilities, input_size

__all__ = ["LOGIT_TOLERANCE", "ONNX_FILE", "OPSET", "OnnxExport", "export_onnx", "onnx_alone_card", "onnx_card",
           "write_onnx_folder"]

ONNX_FILE = "model.onnx"
OPSET = 17  # onnxruntime >= 1.14 runs it; the TorchScript exporter's most tested opset
LOGIT_TOLERANCE = 1e-3  # max |logit_ort - logit_torch| / max(1, max |logit_torch|) on the check windows
CHECK_WINDOWS = 3  # the batch of the check (the trace runs on 2): the dynamic axis exercised


class OnnxExport(NamedTuple):
    """The serialised model and the record stored in its metadata (also returned for the card)."""

    data: bytes
    record: dict[str, Any]


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


def export_onnx(segmenter: Mapping[str, Any], *, provenance: Mapping[str, Any], source: str) -> OnnxExport:
    """``model.onnx`` of a fine-tuned segmenter (``segmenter``: weights ``model``, spec ``network``, run ``config``,
    ``step``, as ``segmenter.pt`` holds them), checked and measured, with its record (`asa.eval.onnx_network`) and
    ``provenance`` (the card's encoder, pretraining cohort and licence) in the model's metadata. Raises
    ``ValueError`` naming ``source`` when the exporter, the checker or the parity check refuses it."""
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
    return OnnxExport(model.SerializeToString(), record)


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


def onnx_alone_card(record: Mapping[str, Any], arch: str) -> str:
    """``README.md`` beside a ``model.onnx`` that has no model folder (a network without an encoder: DynUNet): the
    front matter, the provenance and :func:`onnx_card`."""
    prov = record["provenance"]
    source = prov.get("source") or {}
    return "\n".join([
        "---", f"license: {prov.get('license')}", "library_name: asa", "pipeline_tag: image-segmentation", "tags:",
        "- medical-imaging", "- 3d", "- brain-mri", "- onnx", f"- {arch}", "---", "",
        f"# asa segmenter ({arch})", "",
        "A fine-tuned 3D brain-MRI segmenter. Research use only: it is not a medical device and was not validated "
        "for clinical decisions.", "",
        f"- task: {prov.get('task')}; training data: {prov.get('training_data')}",
        f"- encoder: {prov.get('encoder')}",
        f"- source: {source.get('file')} (step {source.get('step')}); asa {prov.get('asa_version')}"
        + (f", commit {prov['git_commit']}" if prov.get("git_commit") else ""),
        f"- licence: `{prov.get('license')}`", onnx_card(record)])


def write_onnx_folder(out: Path, data: bytes, card: str) -> Path:
    """``model.onnx`` and ``README.md`` as the folder ``out`` (emptied beforehand by the caller), written beside it
    and moved into place, so a failed write leaves no folder that looks finished."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / ONNX_FILE).write_bytes(data)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.is_dir():
            for name in (ONNX_FILE, "README.md"):
                os.replace(tmp / name, out / name)
        else:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
