"""The four terms of SA-Swin's Symmetry-Aware Head (Ma et al.; docs/method.md §1.6b).

``L = L_rot + L_con + L_rec + ½ (L_sym(x₁) + L_sym(x₂))``: 4-way rotation cross-entropy, NT-Xent
between two augmented views, L1 inpainting reconstruction after patch drop-out, and the symmetry
term ``L_sym = BCE-with-logits(cos(g(x), g(x̃)), 1 − y)`` with y = 1 for a diseased subject.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAH_TERMS = ("rotation", "contrastive", "reconstruction", "symmetry")


def rotation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the 4-way rotation classifier. logits [B, 4], labels [B] in 0..3 -> scalar."""
    return F.cross_entropy(logits.float(), labels)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR) between two views: z1, z2 [B, D], row i of each a positive pair -> scalar.

    Over the 2B embeddings (cosine similarity / τ), each one's positive is its other view and the
    other 2B − 2 are negatives; the loss is the mean cross-entropy over all 2B anchors (0 for B = 1,
    where there is no negative).
    """
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 1:
        raise ValueError(f"nt_xent needs two [B, D] views of the same shape, got {list(z1.shape)} and {list(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2B, D]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, positive)


def inpainting_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between the reconstruction and the view before patch drop-out."""
    return F.l1_loss(reconstruction.float(), target.float())


def symmetry_loss(g: torch.Tensor, g_mirror: torch.Tensor, diseased: torch.Tensor | None = None) -> torch.Tensor:
    """``BCE-with-logits(cos(g(x), g(x̃)), 1 − y)``, mean over the batch.

    g, g_mirror: [B, D] projections of a view and of its left–right mirror; diseased: [B] y in {0, 1}
    (None: all healthy, y = 0), so a healthy brain is pulled towards its mirror and a diseased one away.
    """
    cos = F.cosine_similarity(g.float(), g_mirror.float(), dim=1)  # [B]
    y = torch.zeros_like(cos) if diseased is None else diseased.to(cos)
    return F.binary_cross_entropy_with_logits(cos, 1.0 - y)
