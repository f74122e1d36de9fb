"""SA-Swin: MONAI's SwinUNETR with a symmetry-aware layer on the bottleneck (Ma et al.; docs/method.md §1.6b)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from monai.networks.blocks import MLPBlock
from monai.networks.nets import SwinUNETR
from torch import nn

from asa.models.weights import load_weights
from asa.models.blocks.encoder_weights import LoadReport, match_encoder_weights
from asa.models.blocks.saca import SymmetryCrossAttention
from asa.models.blocks.sizes import spec_input_size
from asa.models.declared import Capabilities
from asa.models.registry import record_spec, register_network
from asa.models.swin.swin_unetr import SWIN_KEYS, SwinUNETRSettings


class SymmetryAwareLayer(nn.Module):
    """One post-LN layer: ``z = LN(f + SA(f))``, ``z = LN(z + SACA(z, f̃))``, ``z = LN(z + MLP(z))``.

    forward(f [B, N, C], f_mirror [B, M, C]) -> [B, N, C]. Attention is global over the tokens and
    carries no position term, so the order of the mirror tokens does not matter.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = SymmetryCrossAttention(dim, num_heads, proj_drop=dropout)  # used as attn(f, f)
        self.norm1 = nn.LayerNorm(dim)
        self.saca = SymmetryCrossAttention(dim, num_heads, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=dropout, act="GELU")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, f: torch.Tensor, f_mirror: torch.Tensor) -> torch.Tensor:
        z = self.norm1(f + self.attn(f, f))
        z = self.norm2(z + self.saca(z, f_mirror))
        return self.norm3(z + self.mlp(z))


def _tokens(volume: torch.Tensor) -> torch.Tensor:
    """[B, C, D, H, W] -> [B, D·H·W, C]."""
    return volume.flatten(2).transpose(1, 2)


class SASwin(SwinUNETR):
    """SA-Swin segmentation network: MONAI's SwinViT runs with shared weights on the input x and on
    its left–right mirror x̃ (flipped along the RAS ``lr_axis``); the bottleneck tokens f of x pass
    one :class:`SymmetryAwareLayer` with the mirror's bottleneck tokens f̃ as keys/values; MONAI's
    SwinUNETR decoder takes the result and the skips of x.

    ``symmetry_heads`` defaults to the last stage's ``num_heads``; other keyword arguments are those
    of ``monai.networks.nets.SwinUNETR``. x: [B, C, D, H, W] (sides divisible by 32) -> logits.
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWIN_KEYS  # its transfer keys (asa.models.keys)

    # five halvings (a 1³ bottleneck fails to normalise); the bottleneck attends to the mirrored image's
    capabilities = Capabilities(crop_multiple=32, crop_min=64,
                                symmetry=("model=sa_swin (cross-attention to the left-right mirrored image)",))

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        lr_axis: int = 0,
        symmetry_heads: int | None = None,
        symmetry_mlp_ratio: float = 4.0,
        **kwargs,
    ) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, **kwargs)
        if lr_axis not in (0, 1, 2):
            raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")
        self.lr_axis = lr_axis
        self.in_channels = in_channels
        dim = 2 * self.swinViT.num_features  # the last stage's output after patch merging: 16·feature_size
        heads = symmetry_heads or self.swinViT.layers4[0].blocks[0].attn.num_heads  # the last stage's
        if dim % heads:
            raise ValueError(f"symmetry_heads {heads} must divide the bottleneck width {dim} (16·feature_size)")
        self.symmetry = SymmetryAwareLayer(dim, heads, mlp_ratio=symmetry_mlp_ratio,
                                           dropout=float(kwargs.get("drop_rate", 0.0)))
        # SwinViT blocks per stage, for layer-wise lr decay (encoder_layer_id)
        self._stage_depths = [len(getattr(self.swinViT, f"layers{k}")[0].blocks) for k in range(1, 5)]
        self.num_encoder_layers = sum(self._stage_depths) + 1  # as in ASASegmenter: the last block is one below

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        """The left–right mirror image: x flipped along ``lr_axis`` (tensor dim 2 + lr_axis)."""
        return x.flip(2 + self.lr_axis)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """SwinViT on x and x̃ in one batch -> (hidden states of x, the mirror's bottleneck [B, C, d, h, w])."""
        hidden = self.swinViT(torch.cat([x, self.mirror(x)]), self.normalize)
        b = x.shape[0]
        return [h[:b] for h in hidden], hidden[4][b:]

    def bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, f̃, symmetry layer output), each [B, N, C] bottleneck tokens."""
        hidden, mirrored = self.encode(x)
        f, f_mirror = _tokens(hidden[4]), _tokens(mirrored)
        return f, f_mirror, self.symmetry(f, f_mirror)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        if x_in.ndim != 5 or x_in.shape[1] != self.in_channels:
            raise ValueError(f"SASwin expects input [B, {self.in_channels}, D, H, W], got {list(x_in.shape)}")
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_input_size(x_in.shape[2:])
        hidden, mirrored = self.encode(x_in)
        z = self.symmetry(_tokens(hidden[4]), _tokens(mirrored))  # [B, N, C]
        z = z.transpose(1, 2).reshape(hidden[4].shape)  # back to [B, C, d, h, w]
        enc0 = self.encoder1(x_in)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec4 = self.encoder10(z)
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return self.out(self.decoder1(dec0, enc0))

    def encoder_layer_id(self, name: str) -> int | None:
        """Depth of a parameter for the encoder-aware lr options (``optim.encoder_lr_scale``,
        ``layer_decay``, ``freeze_encoder_epochs``): 0 the patch embedding, 1 + j for the j-th Swin
        block counted over all stages, a stage's patch merging with that stage's last block, None
        outside the pretrained SwinViT (symmetry layer and decoder)."""
        if not name.startswith("swinViT."):
            return None
        parts = name.split(".")
        if parts[1] == "patch_embed":
            return 0
        stage = int(parts[1][len("layers"):]) - 1 if parts[1][len("layers"):].isdigit() else -1
        if stage < 0 or len(parts) < 4 or parts[3] not in ("blocks", "downsample"):
            raise ValueError(f"encoder_layer_id: unexpected SwinViT parameter {name!r}")
        before = sum(self._stage_depths[:stage])
        return before + (int(parts[4]) + 1 if parts[3] == "blocks" else self._stage_depths[stage])

    def load_pretrained(
        self, path: str | Path, *, checkpoint: dict | None = None, verbose: bool = True
    ) -> LoadReport:
        """Initialise the SwinViT from an SA-Swin pretraining checkpoint (``{"model": ...}``, DDP
        prefixes allowed) or its encoder export (``{"encoder": {"swinViT.*": ...}}``, ``encoder.pt`` or
        ``encoder.safetensors``, `asa.models.load_weights`); the 1-channel
        stem is adapted to k channels; a shape mismatch raises ``ValueError``. Returns the key report."""
        path = Path(path)
        if checkpoint is None:
            checkpoint = load_weights(path)
        if not ({"model", "encoder"} & checkpoint.keys()):
            raise ValueError(f"{path} holds neither a 'model' nor an 'encoder' state dict")
        source = checkpoint["encoder"] if "encoder" in checkpoint else checkpoint["model"]
        update, report = match_encoder_weights(self.state_dict(), source, SWIN_KEYS.prefixes,
                                               SWIN_KEYS.in_proj_weights[0], path)
        self.load_state_dict(update, strict=False)
        if verbose:
            print(f"pretrained SA-Swin encoder from {path}:\n{report}")
        return report


@dataclass
class SASwinSettings(SwinUNETRSettings):
    """``model=sa_swin``: :class:`SASwin`'s keyword arguments (SwinUNETR's and the symmetry layer's); the
    mirrored array axis ``lr_axis`` (RAS: 0)."""

    lr_axis: int = 0
    symmetry_heads: Optional[int] = None  # null: the last stage's num_heads
    symmetry_mlp_ratio: float = 4.0


@register_network("sa_swin", kind="segmentation", settings=SASwinSettings, family="swin")
def sa_swin(*, img_size: Any = None, **kwargs: Any) -> SASwin:
    """:class:`SASwin` for inputs of size ``img_size`` (like SwinUNETR it takes any multiple of 32, so
    ``img_size`` only records the input size); ``kwargs`` are ``SASwin``'s. The spec records the
    mirrored axis the network uses, given or not."""
    size = spec_input_size("sa_swin", img_size)
    net = SASwin(**kwargs)
    net.img_size = tuple(size)
    return record_spec(net, "sa_swin", {"img_size": size, **kwargs, "lr_axis": net.lr_axis})
