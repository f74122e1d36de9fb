"""A resenc pretraining file into a `ResEncUNet`: the stem and encoder stages, every tensor matched.

The file is an asa pretraining checkpoint (``{"model": ..., "network": spec}``) or encoder export
(``{"encoder": ..., "network": spec}``) of ``resenc_pretrain`` or ``resenc``. The stem's first convolution
takes the image channels (and the coordinate channel, last, when the network has one): a file of one image
channel is adapted to k by repeating that channel's weights and dividing them by k, which keeps the
response to a volume replicated over the channels (as the SW-ViT's stem is adapted); the coordinate
channel's weights are kept as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from asa.io import load_weights
from asa.models.swvit.segmenter import LoadReport, match_encoder_weights

if TYPE_CHECKING:
    from asa.models.cnn.resenc import ResEncUNet

__all__ = ["STEM_KEYS", "load_resenc_encoder"]

PREFIX = "encoder."
# the stem's first convolution, under both names the package's state dict gives the one tensor
STEM_KEYS = ("encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight")
RESENC_FILES = ("resenc", "resenc_pretrain")


def _adapt_stem(value: torch.Tensor, image_channels: int, coord: bool, key: str) -> tuple[torch.Tensor, str | None]:
    """A stem weight [C_out, c (+1), k, k, k] of one image channel for ``image_channels`` (+ the coordinate)."""
    own = value.shape[1] - int(coord)
    if own != 1 or image_channels == 1:
        return value, None
    image, rest = value[:, :1], value[:, 1:]
    adapted = torch.cat([image.repeat(1, image_channels, 1, 1, 1) / image_channels, rest], dim=1)
    return adapted, f"{key} 1 -> {image_channels} image channels (repeated, divided by {image_channels})"


def load_resenc_encoder(net: ResEncUNet, path: str | Path, *, checkpoint: dict | None = None,
                        verbose: bool = True) -> LoadReport:
    """Initialise ``net``'s stem and encoder stages from the resenc file ``path`` (its content ``checkpoint``
    when read already). Refused, naming the file and the option or keys at fault: a file of another network,
    a coordinate channel in the file and not in the network (or the reverse), any shape mismatch, and any
    encoder tensor of ``net`` the file does not hold."""
    path = Path(path)
    blob = load_weights(path) if checkpoint is None else checkpoint
    if not ({"model", "encoder"} & blob.keys()):
        raise ValueError(f"{path} holds neither a 'model' nor an 'encoder' state dict")
    spec = blob.get("network") or {}
    arch = spec.get("arch")
    if arch not in RESENC_FILES:
        raise ValueError(f"model.pretrained={path}: a file of network {arch!r}; model=resenc takes a resenc pretraining "
                         f"file (asa-pretrain model=resenc: {' or '.join(RESENC_FILES)})")
    recorded = bool(spec.get("kwargs", {}).get("coord_channel", False))
    if recorded != net.coord_channel:
        raise ValueError(f"model.pretrained={path}: the encoder was pretrained "
                         f"{'with' if recorded else 'without'} the coordinate channel; set "
                         f"model.coord_channel={str(recorded).lower()}")
    source = {k.removeprefix("module."): v for k, v in (blob["encoder"] if "encoder" in blob else blob["model"]).items()}
    adapted = []
    for key in STEM_KEYS:
        if key in source:
            source[key], note = _adapt_stem(source[key], net.in_channels, net.coord_channel, key)
            adapted += [note] if note else []
    own = net.encoder.state_dict(prefix=PREFIX)
    update, report = match_encoder_weights(own, source, (PREFIX,), STEM_KEYS[0], path)
    report.adapted = adapted
    if report.missing:
        shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
        raise ValueError(f"model.pretrained={path}: {len(report.missing)} encoder tensor(s) of the network are not in "
                         f"the file ({shown}): a resenc of another size or crop plan (model.size, data.crop)")
    net.encoder.load_state_dict({k.removeprefix(PREFIX): v for k, v in update.items()}, strict=True)
    if verbose:
        print(f"pretrained encoder from {path}:\n{report}")
    return report
