"""``model=primus``: dynamic-network-architectures' own ``Primus`` (patch embedding ``down_projection``, an EVA
transformer ``eva``, a patch decoder ``up_projection``) with asa's contract: built from a network spec's flat
keyword arguments, optionally with asa's symmetric position code on its token grid, and ``load_pretrained`` for a
file of its masked twin. The encoder's keys are the ones Primus declares (``key_to_encoder``, ``key_to_stem``,
``keys_to_in_proj``), read off the network (`asa.models.keys`).

:class:`PrimusNet` wraps a ``Primus`` by adopting its parts under Primus's own names (its state dict is Primus's,
key for key), and imports it when built: dynamic-network-architectures' Primus pulls timm, and timm torchvision,
which asa's other networks do without."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asa.choices import in_range, one_of
from asa.models.blocks.encoder_weights import LoadReport, match_encoder_weights
from asa.models.blocks.patch import patch_grid
from asa.models.blocks.position import symmetric_position_encoding
from asa.models.blocks.sizes import to_3tuple
from asa.models.declared import Capabilities
from asa.models.keys import encoder_keys
from asa.models.registry import NetworkSettings, record_spec, register_network
from asa.models.road import pretrains
from asa.models.torchvision_ops import import_torchvision
from asa.models.weights import load_weights

__all__ = ["DEFAULT_SIZE", "PRIMUS_SIZES", "POS_MODES", "TOPOLOGY", "PrimusNet", "PrimusOptions", "PrimusSettings", "dna_class",
           "primus"]

# Primus's sizes (dynamic-network-architectures' _PRIMUS_CONFIGS, stated here: reading them imports timm; tested
# equal) and a tiny one for CPU tests; the size of a Primus that names none
PRIMUS_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 48, "eva_depth": 2, "eva_numheads": 2},
    "S": {"eva_depth": 12, "eva_numheads": 6, "embed_dim": 396},
    "B": {"eva_depth": 12, "eva_numheads": 12, "embed_dim": 792},
    "M": {"eva_depth": 16, "eva_numheads": 12, "embed_dim": 864},
    "L": {"eva_depth": 24, "eva_numheads": 16, "embed_dim": 1056},
}
DEFAULT_SIZE = "B"


def dna_class(name: str) -> type[nn.Module]:
    """dynamic-network-architectures' ``Primus`` or ``Eva``, imported (refused, saying why, where timm does not)."""
    try:
        import_torchvision()
        from dynamic_network_architectures.architectures.primus import Primus
        from dynamic_network_architectures.building_blocks.eva import Eva
    except (ImportError, RuntimeError) as err:  # timm imports torchvision
        raise ImportError(f"model=primus needs dynamic-network-architectures' Primus, which does not import here "
                          f"({type(err).__name__}: {err}); install timm and the torchvision paired with your torch "
                          "(README)") from err
    return {"Primus": Primus, "Eva": Eva}[name]


# what a published file's Primus may set beyond its size (`PrimusNet`'s ``topology``): Primus's own arguments
TOPOLOGY = ("embed_dim", "eva_depth", "eva_numheads", "init_values", "scale_attn_inner")
POS_MODES = ("none", "mirror")  # none: Primus's own codes alone; mirror: + asa's symmetric code (docs/method.md §1.2)


@dataclass
class PrimusOptions:
    """The settings a Primus takes in both asa-pretrain and asa-finetune (``model=primus``)."""

    size: str = one_of(DEFAULT_SIZE, tuple(PRIMUS_SIZES))  # tiny (tests) | S | B | M | L: Primus's sizes
    patch_size: int = in_range(8, 1)  # the token edge (nnssl's Primus: 8)
    # asa's mirror-symmetric sinusoidal code added to the tokens, on top of Primus's learned code and RoPE
    pos_mode: str = one_of("none", POS_MODES)
    lr_axis: int = in_range(0, 0, 2)  # the left-right axis of the symmetric code


@dataclass
class PrimusSettings(PrimusOptions, NetworkSettings):
    """``model=primus`` of asa-finetune."""

    drop_path_rate: float = in_range(0.0, 0.0, 1.0)


class PrimusNet(nn.Module):
    """``Primus`` of one crop, whose tokens may carry asa's symmetric position code.

    Args:
        img_size: the crop (three edges, voxels), a multiple of ``patch_size``.
        in_channels: image channels.
        out_channels: output channels (logits; a reconstruction: the image channels).
        size: a `PRIMUS_SIZES` key.
        patch_size: the token edge.
        pos_mode: ``none`` | ``mirror`` (`POS_MODES`).
        lr_axis: the symmetric code's left-right axis.
        drop_path_rate: stochastic depth of the EVA blocks.
        topology: a published file's Primus beyond ``size`` (`TOPOLOGY`: ``embed_dim``, ``eva_depth``,
            ``eva_numheads``, and the layer scale ``init_values`` and ``scale_attn_inner`` of nnssl's presets), as
            Primus takes them; the size's for those not given.

    forward(x [B, C, *img_size]) -> [B, out_channels, *img_size].
    """

    def __init__(self, *, img_size: tuple[int, int, int], in_channels: int, out_channels: int, size: str,
                 patch_size: int, pos_mode: str, lr_axis: int, drop_path_rate: float = 0.0,
                 topology: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if size not in PRIMUS_SIZES:
            raise ValueError(f"size={size}: Primus's sizes are {', '.join(PRIMUS_SIZES)}")
        if pos_mode not in POS_MODES:
            raise ValueError(f"pos_mode={pos_mode}: Primus takes {' or '.join(POS_MODES)}")
        grid = patch_grid(img_size, patch_size)  # refuses a crop the patch does not divide
        if unknown := sorted(set(topology or {}) - set(TOPOLOGY)):
            raise ValueError(f"{', '.join(unknown)}: a Primus's topology is set by {', '.join(TOPOLOGY)}")
        primus = dna_class("Primus")(int(in_channels), num_classes=int(out_channels), patch_embed_size=(patch_size,) * 3,
                                 input_shape=tuple(img_size), drop_path_rate=drop_path_rate,
                                 **{**PRIMUS_SIZES[size], **(topology or {})})
        # Primus's parts under its names, in its order (its state dict, key for key), and its declared keys
        self.down_projection, self.up_projection, self.eva = primus.down_projection, primus.up_projection, primus.eva
        self.register_buffer("mask_token", primus.mask_token)
        self.key_to_encoder, self.key_to_stem = primus.key_to_encoder, primus.key_to_stem
        self.keys_to_in_proj, self.key_to_lpe = primus.keys_to_in_proj, primus.key_to_lpe
        self.embed_dim = int(primus.embed_dim)
        self.img_size, self.grid, self.patch_size = tuple(img_size), grid, int(patch_size)
        self.in_channels, self.pos_mode, self.lr_axis = int(in_channels), pos_mode, int(lr_axis)
        code = (symmetric_position_encoding(grid, self.embed_dim, mode="mirror", lr_axis=lr_axis)[None]
                if pos_mode == "mirror" else torch.zeros(1, 1, self.embed_dim))
        self.register_buffer("symmetric_code", code, persistent=False)  # [1, N, E]; not Primus's: kept out of files
        self.capabilities = Capabilities(crop_multiple=self.patch_size, crop_min=self.patch_size,
                                         symmetry=("model.pos_mode",) if pos_mode == "mirror" else ())

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *img_size] -> tokens [B, N, E], raster order (axis 2 fastest), with the symmetric code."""
        tokens = self.down_projection(x).flatten(2).transpose(1, 2)  # [B, E, g0, g1, g2] -> [B, N, E]
        return tokens + self.symmetric_code.to(tokens.dtype) if self.pos_mode != "none" else tokens

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None, eva: nn.Module | None = None
               ) -> torch.Tensor:
        """``eva`` (None: the encoder's) on the tokens [B, N, E] (its learned code and RoPE at their grid
        positions); ``keep`` [B, n]: the positions of the tokens it sees (None: all) -> [B, n, E]."""
        eva = self.eva if eva is None else eva
        x = tokens + eva.pos_embed if eva.pos_embed is not None else tokens
        x = eva.pos_drop(x)
        rope = eva.rope.get_embed() if eva.rope is not None else None  # [N, 2·head_dim]
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # [B, n, E]
            if rope is not None:
                rope = rope[keep][:, None]  # [B, 1, n, 2·head_dim]: each sample's kept positions, all heads
        for block in eva.blocks:
            x = block(x, rope=rope)
        return eva.norm(x)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, E] of the whole grid -> the patch decoder's output [B, out, *img_size]."""
        volume = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid)  # [B, E, g0, g1, g2]
        return self.up_projection(volume)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(self.embed(x)))

    def load_pretrained(self, path: str | Path, checkpoint: dict | None = None, verbose: bool = True) -> LoadReport:
        """Initialise the patch embedding and EVA (the keys Primus declares) from a file of this network or its
        masked twin (``checkpoint``: its content when read); the patch decoder stays fresh. Refused, naming the
        file and the option at fault: a file of another network or position code, any tensor of another shape."""
        blob = load_weights(path) if checkpoint is None else checkpoint
        spec = blob.get("network") or {}
        arch, own = spec.get("arch"), self.network_arch
        if not pretrains(arch, own):
            raise ValueError(f"model.pretrained={path}: a file of network {arch!r}; model={own} takes a file of {own} "
                             f"or of its masked twin (asa-pretrain model={own})")
        recorded = (spec.get("kwargs") or {}).get("pos_mode", "none")
        if recorded != self.pos_mode:
            raise ValueError(f"model.pretrained={path}: the encoder was pretrained with pos_mode={recorded}; set "
                             f"model.pos_mode={recorded}")
        keys = encoder_keys(self)
        source = blob["encoder"] if "encoder" in blob else blob["model"]
        update, report = match_encoder_weights(keys.state(self), source, keys.prefixes, keys.in_proj_weights[0], path)
        if report.missing:
            raise ValueError(f"model.pretrained={path}: {len(report.missing)} encoder tensor(s) of the network are not "
                             f"in the file ({', '.join(report.missing[:5])})")
        keys.load(self, update)
        if verbose:
            print(f"pretrained encoder from {path}:\n{report}")
        return report


@register_network("primus", kind="segmentation", settings=PrimusSettings, family="primus")
def primus(*, img_size: Any, in_channels: int, out_channels: int, size: str = DEFAULT_SIZE, patch_size: int = 8,
           pos_mode: str = "none", lr_axis: int = 0, drop_path_rate: float = 0.0, **topology: Any) -> PrimusNet:
    """The Primus segmenter for crops of ``img_size`` (arguments as :class:`PrimusNet`'s; ``topology``: a published
    file's, recorded in the spec only when given)."""
    sizes = list(to_3tuple(img_size, "img_size"))
    net = PrimusNet(img_size=tuple(sizes), in_channels=in_channels, out_channels=out_channels, size=size,
                    patch_size=patch_size, pos_mode=pos_mode, lr_axis=lr_axis, drop_path_rate=drop_path_rate,
                    topology=topology)
    return record_spec(net, "primus", {
        "img_size": sizes, "in_channels": int(in_channels), "out_channels": int(out_channels), "size": size,
        "patch_size": int(patch_size), "pos_mode": pos_mode, "lr_axis": int(lr_axis),
        "drop_path_rate": float(drop_path_rate), **topology})
