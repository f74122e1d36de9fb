"""Optimisers with the paper's recipes (DESIGN §1.7) and the linear lr scaling rule."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups", "scaled_lr"]

_OPTIMIZERS = {"adamw", "sgd"}


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: base_lr × global_batch / 256 (global = per-device batch × world × accumulation)."""
    if global_batch < 1:
        raise ValueError(f"global_batch={global_batch}: expected a positive integer")
    return base_lr * global_batch / 256.0


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()) -> list[dict]:
    """Two groups: decayed weights, and undecayed (ndim <= 1 tensors: norms and biases; names in
    `model.no_weight_decay()` or `skip`: position/mask tokens, relative-position biases).

    A name in the skip list matches a parameter equal to it or one that ends with "." + it, so a model
    wrapped in a parent module still gets the right group.
    """
    skip_names = _no_decay_names(model) | set(skip)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skipped = p.ndim <= 1 or name.endswith(".bias") or any(
            name == s or name.endswith("." + s) for s in skip_names
        )
        (no_decay if skipped else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adamw",
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    momentum: float = 0.99,
    nesterov: bool = True,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW (pretraining) or SGD with Nesterov momentum (fine-tuning); no decay on norms, biases and
    `model.no_weight_decay()` names. `lr` is the peak learning rate; the engine rescales every group
    each step by the schedule (times the group's optional "lr_scale")."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer name={name!r}: expected one of {sorted(_OPTIMIZERS)}")
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
