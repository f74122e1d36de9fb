"""A resenc pretraining file into a `ResEncUNet`: the stem and encoder stages, every tensor matched.

The file is an asa pretraining checkpoint (``{"model": ..., "network": spec}``) or encoder export
(``{"encoder": ..., "network": spec}``) of the network itself or of a pretraining network registered as its
masked twin (`asa.models.family`). The input projection is the one the network
declares (dynamic-network-architectures' ``keys_to_in_proj``). The stem's first convolution
takes the image channels (and the coordinate channel, last, when the network has one): a file of one image
channel is adapted to k by repeating that channel's weights and dividing them by k, which keeps the
response to a volume replicated over the channels (as the SW-ViT's stem is adapted); the coordinate
channel's weights are kept as they are.

A published checkpoint (nnssl / OpenMind ResEnc-L, nnU-Net v2, AMAES ResEnc-B: `asa.io.foreign`) arrives from
`asa.models.load_weights` as a ``resenc`` encoder export (the spec its family gives nnU-Net's residual-encoder
U-Net); for it the report also states the checkpoint's adaptation
plan, and an encoder tensor of the file the network does not take (unexpected) or of another shape refuses the
load as a missing one does, so that no published encoder is ever loaded in part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from asa.models.weights import load_weights
from asa.io.foreign import describe_foreign
from asa.models.blocks.encoder_weights import LoadReport, match_encoder_weights
from asa.models.family import EncoderKeys, family_of, masked_network, pretrains

__all__ = ["in_proj_keys", "load_resenc_encoder", "match_resenc_encoder"]


def in_proj_keys(net: object) -> tuple[str, ...]:
    """The weight keys of the input projection ``net`` declares (dynamic-network-architectures'
    ``keys_to_in_proj``: the stem's first convolution, under every name its state dict gives the one tensor)."""
    keys = EncoderKeys.declared(net)
    if keys is None or not keys.in_proj:
        raise ValueError(f"a {type(net).__name__} declares no input projection (keys_to_in_proj)")
    return keys.in_proj_weights


def _module_prefixes(own: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """The top-level modules (``"<name>."``) the encoder state ``own`` lives under: a file's tensors under them are
    the encoder's, those of the network or not."""
    return tuple(sorted({key.split(".", 1)[0] + "." for key in own}))


def _adapt_stem(value: torch.Tensor, image_channels: int, coord: bool, key: str) -> tuple[torch.Tensor, str | None]:
    """A stem weight [C_out, c (+1), k, k, k] of one image channel for ``image_channels`` (+ the coordinate)."""
    own = value.shape[1] - int(coord)
    if own != 1 or image_channels == 1:
        return value, None
    image, rest = value[:, :1], value[:, 1:]
    adapted = torch.cat([image.repeat(1, image_channels, 1, 1, 1) / image_channels, rest], dim=1)
    return adapted, f"{key} 1 -> {image_channels} image channels (repeated, divided by {image_channels})"


def load_resenc_encoder(net: nn.Module, path: str | Path, *, checkpoint: dict | None = None,
                        verbose: bool = True) -> LoadReport:
    """Initialise the stem and encoder stages of ``net`` (a `asa.models.cnn.resenc.ResEncUNet`, whose
    ``load_pretrained`` this is) from the resenc file ``path`` (its content ``checkpoint`` when read
    already). Refused, naming the file and the option or keys at fault: a file of another network, a
    coordinate channel in the file and not in the network (or the reverse), any shape mismatch, and any
    encoder tensor of ``net`` the file does not hold."""
    path = Path(path)
    blob = load_weights(path) if checkpoint is None else checkpoint
    if not ({"model", "encoder"} & blob.keys()):
        raise ValueError(f"{path} holds neither a 'model' nor an 'encoder' state dict")
    spec = blob.get("network") or {}
    arch, own = spec.get("arch"), getattr(net, "network_arch", "resenc")
    if not pretrains(arch, own):
        twin = masked_network(own)
        raise ValueError(f"model.pretrained={path}: a file of network {arch!r}; model={own} takes a file of {own}"
                         + (f" or of its masked twin {twin} (asa-pretrain model={own})" if twin else ""))
    recorded = bool(spec.get("kwargs", {}).get("coord_channel", False))
    if recorded != net.coord_channel:
        raise ValueError(f"model.pretrained={path}: the encoder was pretrained "
                         f"{'with' if recorded else 'without'} the coordinate channel; set "
                         f"model.coord_channel={str(recorded).lower()}")
    if recorded:  # the channel's value is |x - x_mid| / (X/2) with X the pretraining crop: another X recodes every voxel
        size = spec.get("kwargs", {}).get("img_size")
        edge = int(size if isinstance(size, (int, float)) else size[net.lr_axis]) if size is not None else None
        if edge is not None and edge != net.img_size[net.lr_axis]:
            raise ValueError(f"model.pretrained={path}: the encoder was pretrained with the coordinate channel at a "
                             f"{edge}-voxel crop, whose edge sets the channel's scale; this network's crop is "
                             f"{net.img_size[net.lr_axis]}: set data.crop={edge} (or pretrain without "
                             "model.coord_channel)")
    keys = family_of(own).encoder_keys(net)  # as the network declares them (key_to_encoder, key_to_stem, ...)
    update, report = match_resenc_encoder(keys.state(net), blob, path, in_proj=keys.in_proj_weights,
                                          image_channels=net.in_channels, coord=net.coord_channel)
    keys.load(net, update)
    if verbose:
        print(f"pretrained encoder from {path}:\n{report}")
    return report


def _first(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def match_resenc_encoder(own: dict[str, torch.Tensor], blob: dict, path: str | Path, *, in_proj: Sequence[str],
                         image_channels: int, coord: bool = False, where: str | None = None
                         ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The encoder tensors of the resenc file content ``blob`` for a network whose encoder state is ``own``
    (its keys in the network, `asa.models.family.EncoderKeys.state`; the file's tensors under the same top-level
    modules are the encoder's), the input projection (``in_proj``: its weight keys, `in_proj_keys`) adapted to
    ``image_channels`` (+ the coordinate channel), and the report.

    Refused (``ValueError`` naming ``path``, the option and the first keys at fault, the whole report
    attached): any encoder tensor of the network the file does not hold; for a published checkpoint also any
    encoder tensor of the file the network does not take, or of another shape. ``where``: how the refusal names
    the file (default ``model.pretrained=<path>``)."""
    path = Path(path)
    where = where or f"model.pretrained={path}"
    foreign = blob.get("foreign")
    source = {k.removeprefix("module."): v for k, v in (blob["encoder"] if "encoder" in blob else blob["model"]).items()}
    adapted = []
    for key in in_proj:
        if key in source:
            source[key], note = _adapt_stem(source[key], image_channels, coord, key)
            adapted += [note] if note else []
    stem = source.get(in_proj[0])
    if stem is not None and in_proj[0] in own and stem.shape[1] != own[in_proj[0]].shape[1]:
        file_channels = stem.shape[1] - int(coord)
        raise ValueError(f"{where}: its encoder takes {file_channels} image channel(s), this network "
                         f"{image_channels} (the data's channels); the file is fine, the channels differ: a stem is "
                         "adapted from a 1-channel file only, so fine-tune it on data with "
                         f"{file_channels} channel(s), or take a 1-channel encoder")
    update, report = match_encoder_weights(own, source, _module_prefixes(own), in_proj[0], path,
                                           refuse_mismatch=foreign is None)
    report.adapted = adapted
    if foreign is not None:
        report.notes = describe_foreign(foreign)
    faults = [f"{len(report.missing)} encoder tensor(s) of the network are not in the file ({_first(report.missing)})"
              ] if report.missing else []
    if foreign is not None:  # one parameter under two names (conv / all_modules.0): the file must agree with itself
        by_storage: dict[int, str] = {}
        for key, value in own.items():
            first = by_storage.setdefault(value.data_ptr(), key)
            if first != key and key in update and first in update and not torch.equal(update[key], update[first]):
                faults.append(f"{first} and {key} are one tensor of the network but differ in the file")
    if foreign is not None:
        faults += [f"{len(report.unexpected)} encoder tensor(s) of the file are not in the network "
                   f"({_first(report.unexpected)})"] if report.unexpected else []
        faults += [f"{len(report.mismatched)} of another shape ({_first(report.mismatched, 3)})"
                   ] if report.mismatched else []
    if faults:
        hint = ("a resenc of another size or crop plan (model.size, data.crop)" if foreign is None else
                f"a damaged {foreign['layout']} checkpoint (the network's topology is read off the file's own "
                "encoder tensors, so every one of them should fit)")
        counts = (f"loaded {len(report.loaded)} / missing {len(report.missing)} / unexpected {len(report.unexpected)}"
                  f" / shape-mismatched {len(report.mismatched)} encoder tensors")
        raise ValueError("\n".join([f"{where}: refused, not every encoder tensor matched: "
                                     f"{'; '.join(faults)}: {hint}", counts, *report.notes]))
    return update, report
