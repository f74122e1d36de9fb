"""A resenc pretraining file into a `ResEncUNet`: the stem and encoder stages, every tensor matched.

The file is an asa pretraining checkpoint (``{"model": ..., "network": spec}``) or encoder export
(``{"encoder": ..., "network": spec}``) of the network itself or of a pretraining network registered as its
masked twin (`asa.models.family`), or a published checkpoint (nnssl / OpenMind ResEnc-L, nnU-Net v2, AMAES
ResEnc-B: `asa.io.foreign`) that `asa.models.load_weights` gives as a ``resenc`` encoder export (the spec its
family gives nnU-Net's residual-encoder U-Net). What is the resenc's own is checked here (the coordinate channel
and the crop that sets its scale); the tensors are matched by
`asa.models.blocks.encoder_weights.match_file_encoder` (the input projection the network declares adapted to its
channels; a published encoder refused unless every tensor fits).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from asa.models.weights import load_weights
from asa.models.blocks.encoder_weights import LoadReport, match_file_encoder
from asa.models.family import masked_network
from asa.models.road import pretrains
from asa.models.keys import encoder_keys

__all__ = ["load_resenc_encoder"]


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
    keys = encoder_keys(net)  # as the network declares them (key_to_encoder, key_to_stem, ...)
    update, report = match_file_encoder(keys.state(net), blob, path, in_proj=keys.in_proj_weights,
                                        image_channels=net.in_channels, coord=net.coord_channel)
    keys.load(net, update)
    if verbose:
        print(f"pretrained encoder from {path}:\n{report}")
    return report
