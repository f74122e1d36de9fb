"""SA-Swin pretraining: MONAI's SwinViT under the Symmetry-Aware Head (Ma et al.; docs/method.md §1.6b).

Two views of each volume are made by a random 90° rotation in the plane of the two axes other than
``lr_axis`` (so the left–right mirror stays a left–right mirror) and patch drop-out. The shared
SwinViT encodes both views and, for the symmetry term, their left–right mirrors, in one batch; the
heads then give ``L = L_rot + L_con + L_rec + ½ (L_sym(x₁) + L_sym(x₂))``, each term switchable.
The encoder's weights are named ``swinViT.*`` exactly as in :class:`asa.models.SASwin`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer
from torch import nn

from asa.losses import SAH_TERMS, inpainting_loss, nt_xent, rotation_loss, symmetry_loss
from asa.models.blocks.sizes import to_3tuple
from asa.models.presets import SWIN_SIZES
from asa.models.registry import record_spec, register_network
from asa.models.swin.swin_unetr import SWIN_KEYS


@dataclass
class SAHOutput:
    """loss: scalar sum of the enabled terms; terms: each enabled term; view, dropped, reconstruction:
    the first view [B, C, D, H, W] before and after patch drop-out and its reconstruction (or None)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    view: torch.Tensor | None = None
    dropped: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None


def _reconstruction_head(dim: int, out_channels: int) -> nn.Sequential:
    """Five ×2 transposed convolutions from the 1/32 bottleneck back to full resolution."""
    layers: list[nn.Module] = []
    c = dim
    for _ in range(5):
        layers += [nn.ConvTranspose3d(c, c // 2, kernel_size=2, stride=2), nn.InstanceNorm3d(c // 2),
                   nn.LeakyReLU(inplace=True)]
        c //= 2
    layers.append(nn.Conv3d(c, out_channels, kernel_size=1))
    return nn.Sequential(*layers)


@register_network("sa_swin_pretrain", kind="pretraining", family="swin")
class SymmetryAwareHead(nn.Module):
    """SwinViT encoder + rotation, contrastive, inpainting and symmetry heads.

    forward(x [B, C, D, H, W], diseased [B] or None) -> :class:`SAHOutput`. Sides must be divisible
    by 32 and by ``drop_patch``; the two sides other than ``lr_axis`` must be equal (rotation).
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWIN_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        *,
        in_channels: int = 1,
        feature_size: int = SWIN_SIZES["feature_size"],
        depths: tuple[int, ...] = SWIN_SIZES["depths"],
        num_heads: tuple[int, ...] = SWIN_SIZES["num_heads"],
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        use_checkpoint: bool = False,
        lr_axis: int = 0,
        terms: tuple[str, ...] = SAH_TERMS,
        temperature: float = 0.5,
        contrastive_dim: int = 512,
        symmetry_dim: int = 128,
        drop_ratio: float = 0.3,
        drop_patch: int = 16,
    ) -> None:
        super().__init__()
        record_spec(self, "sa_swin_pretrain", {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items()
                                               if k not in ("self", "__class__")})
        unknown = sorted(set(terms) - set(SAH_TERMS))
        if unknown or not terms:
            raise ValueError(f"terms must be a non-empty subset of {SAH_TERMS}, got {list(terms)}")
        if lr_axis not in (0, 1, 2):
            raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must lie in [0, 1), got {drop_ratio}")
        if feature_size % 12:
            raise ValueError(f"feature_size must be divisible by 12 (MONAI SwinViT), got {feature_size}")
        self.in_channels = in_channels
        self.lr_axis = lr_axis
        self.terms = tuple(t for t in SAH_TERMS if t in terms)
        self.temperature = temperature
        self.drop_ratio = drop_ratio
        self.drop_patch = drop_patch
        self.swinViT = SwinTransformer(
            in_chans=in_channels, embed_dim=feature_size, window_size=to_3tuple(window_size, "window_size"),
            patch_size=(2, 2, 2), depths=tuple(depths), num_heads=tuple(num_heads), mlp_ratio=mlp_ratio,
            qkv_bias=True, use_checkpoint=use_checkpoint, spatial_dims=3, downsample=MERGING_MODE["merging"],
        )
        dim = 16 * feature_size
        self.rotation_head = nn.Linear(dim, 4) if "rotation" in terms else None
        self.contrastive_head = nn.Linear(dim, contrastive_dim) if "contrastive" in terms else None
        self.reconstruction_head = _reconstruction_head(dim, in_channels) if "reconstruction" in terms else None
        self.symmetry_head = (nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, symmetry_dim))
                              if "symmetry" in terms else None)  # g in L_sym

    # --- views ---------------------------------------------------------------------------------
    def rotate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate each sample by k·90°, k uniform in 0..3, in the plane of the non-lr axes -> (x', k [B])."""
        a, b = (2 + i for i in range(3) if i != self.lr_axis)
        if x.shape[a] != x.shape[b]:
            raise ValueError(f"rotation needs equal sides along the two axes other than lr_axis {self.lr_axis}, "
                             f"got input {list(x.shape)}")
        k = torch.randint(0, 4, (x.shape[0],), device=x.device)
        out = torch.stack([torch.rot90(x[i], int(k[i]), dims=(a - 1, b - 1)) for i in range(x.shape[0])])
        return out, k

    def patch_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero round(drop_ratio · n) random ``drop_patch``³ cubes of each sample (n cubes in all)."""
        b, _, *sides = x.shape
        s = self.drop_patch
        if any(side % s for side in sides):
            raise ValueError(f"drop_patch {s} must divide the input sides {sides}")
        grid = [side // s for side in sides]
        n = grid[0] * grid[1] * grid[2]
        dropped = round(self.drop_ratio * n)
        order = torch.rand(b, n, device=x.device).argsort(1)
        keep = torch.ones(b, n, device=x.device, dtype=x.dtype)
        keep.scatter_(1, order[:, :dropped], 0.0)
        keep = keep.view(b, 1, *grid)
        for axis in range(3):
            keep = keep.repeat_interleave(s, dim=2 + axis)
        return x * keep

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        """Left–right mirror along ``lr_axis`` (tensor dim 2 + lr_axis)."""
        return x.flip(2 + self.lr_axis)

    # --- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, diseased: torch.Tensor | None = None) -> SAHOutput:
        if x.ndim != 5 or x.shape[1] != self.in_channels or any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"SymmetryAwareHead expects [B, {self.in_channels}, D, H, W] with sides divisible "
                             f"by 32, got {list(x.shape)}")
        b = x.shape[0]
        if "contrastive" in self.terms and b < 2 and self.training:
            raise ValueError("the contrastive term needs a batch of at least 2 volumes per device to have "
                             "negatives (trainer.batch_size >= 2)")
        v1, k1 = self.rotate(x)
        v2, k2 = self.rotate(x)
        views = torch.cat([v1, v2])  # [2B, ...]
        dropped = self.patch_dropout(views)
        inputs = torch.cat([dropped, self.mirror(dropped)]) if "symmetry" in self.terms else dropped
        bottleneck = self.swinViT(inputs, normalize=True)[4]  # [2B or 4B, 16·feature_size, D/32, H/32, W/32]
        pooled = bottleneck.mean(dim=(2, 3, 4))

        terms: dict[str, torch.Tensor] = {}
        reconstruction = None
        if self.rotation_head is not None:
            terms["rotation"] = rotation_loss(self.rotation_head(pooled[: 2 * b]), torch.cat([k1, k2]))
        if self.contrastive_head is not None:
            z = self.contrastive_head(pooled[: 2 * b])
            terms["contrastive"] = nt_xent(z[:b], z[b:], self.temperature)
        if self.reconstruction_head is not None:
            reconstruction = self.reconstruction_head(bottleneck[: 2 * b])
            terms["reconstruction"] = inpainting_loss(reconstruction, views)
        if self.symmetry_head is not None:
            g = self.symmetry_head(pooled)  # [4B, D]: views 1, 2, then their mirrors
            terms["symmetry"] = 0.5 * (symmetry_loss(g[:b], g[2 * b : 3 * b], diseased)
                                       + symmetry_loss(g[b : 2 * b], g[3 * b :], diseased))
        loss = torch.stack(list(terms.values())).sum()
        return SAHOutput(loss=loss, terms=terms, view=v1, dropped=dropped[:b],
                         reconstruction=None if reconstruction is None else reconstruction[:b])

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights :class:`asa.models.SASwin` takes over: ``swinViT.*``."""
        return SWIN_KEYS.state(self)
