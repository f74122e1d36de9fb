"""R-MSA: multi-head self-attention restricted to tokens of the same region (RAT, docs/method.md §1.6b).

Regions are integer ids per token (the majority label of each patch, `patch_regions`). A token
attends to the tokens of its own region, in chunks: the region's tokens, in raster order, are cut
into consecutive chunks of ``chunk_size`` tokens (LW-MSA over the region), so a region of at most
``chunk_size`` tokens is attended as a whole (RAT's R-MSA exactly) and a larger one locally.

The efficient path stably sorts the tokens by region id, lays every region out from a chunk
boundary (so a chunk never holds two regions), attends inside the chunks with one batched
``scaled_dot_product_attention`` call whose mask only drops the padding at the end of a region's
last chunk, and scatters the outputs back: O(N·S) memory for N tokens, never an N × N mask, at most
one partly filled chunk per region. ``mode="dense"`` builds the N × N mask of the same rule from
its definition; it is the reference for tests and for benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("chunked", "dense")


def patch_regions(labels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Majority label of every patch: labels [B, D, H, W] (or [B, 1, D, H, W]) integer -> [B, N] int64.

    Patches in raster order (axis 2 fastest), as `asa.models.patchify`. Ties go to the smallest label.
    """
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"region labels must have one channel, got shape {list(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 4:
        raise ValueError(f"region labels must be [B, D, H, W], got shape {list(labels.shape)}")
    if labels.is_floating_point():
        labels = labels.round()
    labels = labels.long()
    b, d, h, w = labels.shape
    s = patch_size
    if d % s or h % s or w % s:
        raise ValueError(f"region labels {list(labels.shape[1:])} must be divisible by patch_size {s}")
    values, index = torch.unique(labels, return_inverse=True)  # index: labels as 0..K-1
    k = values.numel()
    index = index.view(b, d // s, s, h // s, s, w // s, s).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, s**3)
    counts = torch.zeros(b, index.shape[1], k, dtype=torch.int32, device=labels.device)
    counts.scatter_add_(2, index, torch.ones_like(index, dtype=torch.int32))  # [B, N, K]
    return values[counts.argmax(-1)]  # argmax takes the first maximum: the smallest label


def _rank_in_region(regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank): the stable sort of regions [B, N] and each sorted token's position in its region."""
    sorted_regions, order = torch.sort(regions, dim=1, stable=True)
    n = regions.shape[1]
    position = torch.arange(n, device=regions.device).expand_as(regions)
    starts = torch.ones_like(regions, dtype=torch.bool)
    starts[:, 1:] = sorted_regions[:, 1:] != sorted_regions[:, :-1]
    region_start = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=1).values
    return order, position - region_start


class RegionAttention(nn.Module):
    """Self-attention among the tokens of one region, in chunks of ``chunk_size`` (see module doc).

    x: [B, N, C], regions: [B, N] integer ids -> [B, N, C]. Ids are arbitrary integers; only
    equality matters (relabelling the regions leaves the output unchanged).
    """

    uses_regions = True  # declared for SW blocks: forward needs the region id of every token

    def __init__(
        self,
        dim: int,
        num_heads: int,
        chunk_size: int = 32,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mode: str = "chunked",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if mode not in MODES:
            raise ValueError(f"region attention mode must be one of {MODES}, got {mode!r}")
        self.num_heads = num_heads
        self.chunk_size = chunk_size
        self.mode = mode
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _check(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        if regions is None:
            raise ValueError("region attention needs the region id of every token (regions [B, N])")
        if regions.shape != x.shape[:2] or regions.is_floating_point():
            raise ValueError(f"regions must be integer ids of shape {list(x.shape[:2])}, got "
                             f"{regions.dtype} {list(regions.shape)}")
        return regions.to(x.device, torch.long)

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        regions = self._check(x, regions)
        out = self._dense(x, regions) if self.mode == "dense" else self._chunked(x, regions)
        return self.proj_drop(self.proj(out))

    def _chunked(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        s, h = self.chunk_size, self.num_heads
        order, rank = _rank_in_region(regions)  # [B, N] each, in sorted order
        # slot of every sorted token: regions start on chunk boundaries, so the k-th chunk of the
        # layout is the k-th chunk start (rank % S == 0) met along the sorted sequence
        chunk = (rank % s == 0).cumsum(dim=1) - 1
        slot = chunk * s + rank % s  # [B, N]
        num_chunks = int(chunk[:, -1].max()) + 1
        length = num_chunks * s
        source = torch.zeros(b, length, dtype=torch.long, device=x.device).scatter_(1, slot, order)
        valid = torch.zeros(b, length, dtype=torch.bool, device=x.device).scatter_(1, slot, True)

        qkv = self.qkv(x)  # [B, N, 3C]
        qkv = torch.gather(qkv, 1, source.unsqueeze(-1).expand(-1, -1, 3 * c))  # [B, nC·S, 3C]
        q, k, v = qkv.view(b * num_chunks, s, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B·nC, h, S, d]
        mask = None
        if not bool(valid.all()):
            valid = valid.view(b * num_chunks, 1, s)
            # real queries see the real keys of their chunk (one region); padding queries see all
            # (their rows are dropped) so no row is empty
            mask = (valid | ~valid.transpose(1, 2)).unsqueeze(1)  # [B·nC, 1, S, S]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )  # [B·nC, h, S, d]
        out = out.transpose(1, 2).reshape(b, length, c)
        where = torch.empty_like(slot).scatter_(1, order, slot)  # [B, N]: slot of each token in raster order
        return torch.gather(out, 1, where.unsqueeze(-1).expand(-1, -1, c))

    def _dense(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Reference: the N × N mask ``same region and same chunk of that region``."""
        b, n, c = x.shape
        h = self.num_heads
        same = regions[:, :, None] == regions[:, None, :]  # [B, N, N]
        earlier = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(-1)
        rank = (same & earlier).sum(-1)  # tokens of the same region before this one in raster order
        chunk = rank // self.chunk_size
        mask = same & (chunk[:, :, None] == chunk[:, None, :])
        q, k, v = self.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, N, d]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.unsqueeze(1), dropout_p=self.attn_drop if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(b, n, c)
