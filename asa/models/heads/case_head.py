"""ASACaseHead: the shared SW-ViT encoder, pooled tokens and a small MLP, for case-level targets
(diagnosis classification: K logits; brain-age regression: 1 value)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from asa.models.blocks.saca import SACA_PLACES
from asa.models.declared import Capabilities
from asa.models.registry import record_spec, register_network
from asa.models.swvit.encoder import SWVIT_KEYS, EncoderSettings, SWViTSettings
from asa.models.swvit.segmenter import ASASegmenter

POOLINGS = ("mean", "attention")


class AttentionPool(nn.Module):
    """Attention pooling: one learned query scores every token, softmax over tokens, weighted sum.

    tokens [B, N, C] -> [B, C]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.score(self.norm(tokens)).softmax(dim=1)  # [B, N, 1]
        return (weights * tokens).sum(dim=1)  # [B, C]


class PooledTokenHead(nn.Module):
    """Base of the case networks (the SW-ViT's :class:`ASACaseHead`, the MONAI baselines of
    `asa.models.heads.case_baselines`): an encoder's tokens [B, N, C] pooled (``pooling``: ``mean``, or
    ``attention`` with one learned query, module ``pool``), then the MLP ``mlp``: LayerNorm → Linear
    → GELU → dropout → Linear to ``out_channels`` outputs, given as ``target_shift + target_scale ·
    MLP(pooled)`` (a regression head learns the standardised target). A subclass checks the options
    with :meth:`check_head` before it builds its encoder and adds the head with :meth:`init_head`
    after it (the encoder draws its initial weights first)."""

    @staticmethod
    def check_head(name: str, *, out_channels: int, pooling: str, hidden_dim: int, target_scale: float) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"task.head.pooling={pooling!r}: expected one of {POOLINGS}")
        if not target_scale > 0:
            raise ValueError(f"{name} target_scale must be > 0, got {target_scale}")
        if out_channels < 1 or hidden_dim < 1:
            raise ValueError(f"{name} needs out_channels >= 1 and hidden_dim >= 1, got {out_channels}, {hidden_dim}")

    def init_head(self, dim: int, *, out_channels: int, pooling: str, hidden_dim: int, head_dropout: float,
                  target_shift: float, target_scale: float) -> None:
        """Add ``pool`` (None for mean pooling) and ``mlp`` over tokens of width ``dim``."""
        self.out_channels = out_channels
        self.target_shift, self.target_scale = float(target_shift), float(target_scale)
        self.pool = AttentionPool(dim) if pooling == "attention" else None
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(),
                                 nn.Dropout(head_dropout), nn.Linear(hidden_dim, out_channels))

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C] -> [B, C] (mean, or attention pooling)."""
        return tokens.mean(dim=1) if self.pool is None else self.pool(tokens)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C] -> outputs [B, out_channels] in the target's units."""
        return self.target_shift + self.target_scale * self.mlp(self.pool_tokens(tokens))


@register_network("case_head", kind="case", case_of="swvit_unetr",
                  settings=SWViTSettings, family="swvit")
class ASACaseHead(PooledTokenHead):
    """SW-ViT encoder over every token of the brain-centred crop (+ SPE, as :class:`ASASegmenter`'s,
    same ``encoder.*`` keys, so pretraining files load with :meth:`load_pretrained`), tokens pooled
    (``pooling``: ``mean``, or ``attention`` with one learned query), then LayerNorm → Linear →
    GELU → dropout → Linear to ``out_channels`` outputs (K class logits, or 1 regression value).
    The outputs are ``target_shift + target_scale · MLP(pooled)``: a regression head learns the
    standardised target (the training set's mean and standard deviation, recorded in its spec), so
    its outputs are in the target's own units.

    x: [B, C, D, H, W] (D, H, W = img_size) -> [B, out_channels]. ``offsets`` [B, 3]: the crop's
    patch offset from the reference grid (brain frame); None is offset 0, the pretraining crop.
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWVIT_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        *,
        out_channels: int = 2,
        dropout: float = 0.0,
        reference_grid: int | tuple[int, int, int] | None = None,
        saca: str = "none",
        pooling: str = "mean",
        hidden_dim: int = 256,
        head_dropout: float = 0.0,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        **encoder: Any,
    ) -> None:
        super().__init__()
        settings = EncoderSettings.of("ASACaseHead", encoder)
        self.check_head("ASACaseHead", out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                        target_scale=target_scale)
        if settings.region_attention != "none":
            raise ValueError(f"model.region_attention={settings.region_attention!r}: the case head takes no region "
                             "maps; use region_attention=none")
        if saca not in SACA_PLACES:
            raise ValueError(f"saca must be one of {SACA_PLACES}, got {saca!r}")
        self.encoder = settings.encoder(saca=saca in ("encoder", "all"), dropout=dropout, reference_grid=reference_grid)
        enc = self.encoder
        self.img_size, self.grid, self.reference_grid = enc.img_size, enc.grid, enc.reference_grid
        self.in_channels, self.embed_dim, self.patch_size = settings.in_channels, settings.embed_dim, settings.patch_size
        self.pos_mode, self.lr_axis = settings.pos_mode, settings.lr_axis
        self.spe_frame = "brain"  # exports place codes on the brain frame
        # test-time crops start on the brain frame's patch lattice
        self.capabilities = Capabilities(offsets=True, patch_size=self.patch_size, reference_grid=self.reference_grid,
                                         crop_lattice=self.patch_size, symmetry=enc.symmetric_parts)
        self.num_encoder_layers = settings.depth + 1  # patch embedding = layer 0, block i = i + 1, final norm = depth + 1
        self.init_head(settings.embed_dim, out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                       head_dropout=head_dropout, target_shift=target_shift, target_scale=target_scale)
        record_spec(self, "case_head", {
            **settings.spec(), "out_channels": out_channels, "dropout": dropout,
            "reference_grid": list(self.reference_grid), "saca": saca, "pooling": pooling, "hidden_dim": hidden_dim,
            "head_dropout": head_dropout, "target_shift": target_shift, "target_scale": target_scale})

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, D, H, W]; offsets: [B, 3] or None -> [B, out_channels]."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"ASACaseHead expects input [B, {self.in_channels}, {', '.join(map(str, self.img_size))}], "
                             f"got {list(x.shape)}")
        return self.head(self.encoder.encode(x, offsets=offsets))  # tokens [B, N, C], normed

    # the encoder is ASASegmenter's (same keys, same grid rules): its loader, grid check, layer ids and
    # decay exemptions apply unchanged
    check_grid = ASASegmenter.check_grid
    load_pretrained = ASASegmenter.load_pretrained
    encoder_layer_id = ASASegmenter.encoder_layer_id
    no_weight_decay = ASASegmenter.no_weight_decay
