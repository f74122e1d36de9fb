"""Optimisers with the paper's recipes (docs/method.md §1.7), the linear lr scaling rule, and encoder-aware
fine-tuning groups (encoder lr multiplier, MAE-style layer-wise lr decay, encoder freeze)."""
from __future__ import annotations

import sys

from collections.abc import Iterable

import torch
from torch import nn

from .updates import encoder_names

__all__ = ["build_optimizer", "describe_lr", "layer_lr_scales", "load_optimizer_state", "param_groups", "scaled_lr", "LOW_LR",
           "OPTIMIZERS", "STATE_COPIES"]

OPTIMIZERS = ("adamw", "sgd")
STATE_COPIES = {"adamw": 2, "sgd": 1}  # tensors the size of a parameter each keeps: AdamW's moments, SGD's momentum
LOW_LR = 1e-5  # below this a peak lr usually means the scaling rule shrank it unnoticed


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: base_lr × global_batch / 256 (global = per-device batch × world × accumulation)."""
    if global_batch < 1:
        raise ValueError(f"global_batch={global_batch}: expected a positive integer")
    return base_lr * global_batch / 256.0


def describe_lr(base_lr: float, global_batch: int, scale: bool, *, key: str = "optim.base_lr") -> tuple[float, str]:
    """(peak lr, one line saying which rule produced it), e.g.
    ``"optim.base_lr 0.00015 × global batch 2 / 256 = 1.17e-06 (optim.scale_lr=true)"``; ``key``: the
    option ``base_lr`` came from (``optim.scratch_base_lr`` for a fine-tuning run from scratch)."""
    if not scale:
        return float(base_lr), f"{key} {base_lr:g} used as given (optim.scale_lr=false) = {base_lr:.3g}"
    lr = scaled_lr(base_lr, global_batch)
    return lr, f"{key} {base_lr:g} × global batch {global_batch} / 256 = {lr:.3g} (optim.scale_lr=true)"


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def _undecayed(name: str, p: nn.Parameter, skip_names: set[str]) -> bool:
    """Whether `param_groups` puts the parameter in an undecayed group (norms, biases, listed names)."""
    return p.ndim <= 1 or name.endswith(".bias") or any(name == s or name.endswith("." + s) for s in skip_names)


def layer_lr_scales(model: nn.Module, *, encoder_lr_scale: float = 1.0, layer_decay: float = 1.0) -> dict[str, float]:
    """lr multiplier per parameter name: ``encoder_lr_scale`` on the encoder, 1 elsewhere (the decoder
    and heads), with MAE / BEiT layer-wise decay on top when ``layer_decay`` < 1.

    The encoder is the one the network declares (`asa.models.keys`: ``encoder`` of ASASegmenter, ``vit`` of
    UNETR, ``swinViT`` of SwinUNETR and SA-Swin). Layer-wise decay needs the network to number its encoder
    layers with ``model.encoder_layer_id(name)``: 0 for the patch embedding (and position tokens), i + 1 for
    encoder block i, ``model.num_encoder_layers`` (= depth + 1) for the final encoder norm, None for decoder
    parameters. Layer l gets
    ``encoder_lr_scale · layer_decay^(L − l)`` with L = depth + 1, so block i gets decay^(depth − i),
    the patch embedding decay^(depth + 1) and the decoder 1.
    """
    if encoder_lr_scale < 0:
        raise ValueError(f"optim.encoder_lr_scale={encoder_lr_scale}: expected >= 0")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"optim.layer_decay={layer_decay}: expected a value in (0, 1]")
    layer_of = getattr(model, "encoder_layer_id", None)
    if layer_decay == 1.0 and not callable(layer_of):
        encoder = encoder_names(model)
        if encoder is None:
            raise ValueError(f"optim.encoder_lr_scale / freeze_encoder_epochs need a network with an encoder "
                             f"(key_to_encoder, asa.models.keys); {type(model).__name__} declares none")
        return {name: encoder_lr_scale if name in encoder else 1.0 for name, _ in model.named_parameters()}
    if not callable(layer_of):
        raise ValueError(f"optim.layer_decay needs a network with an encoder that numbers its layers (model arch swvit_unetr, "
                         f"sa_swin or a case head); {type(model).__name__} has no encoder_layer_id()")
    top = int(model.num_encoder_layers)
    scales = {}
    for name, _ in model.named_parameters():
        layer = layer_of(name)
        scales[name] = 1.0 if layer is None else encoder_lr_scale * layer_decay ** (top - layer)
    return scales


def param_groups(
    model: nn.Module,
    weight_decay: float,
    skip: Iterable[str] = (),
    *,
    lr_scales: dict[str, float] | None = None,
    frozen: Iterable[str] = (),
    freeze_epochs: int = 0,
) -> list[dict]:
    """Groups of decayed weights and undecayed ones (ndim <= 1 tensors: norms and biases; names in
    `model.no_weight_decay()` or `skip`: position/mask tokens, relative-position biases), split
    further by `lr_scales` (name -> multiplier, stored as the group's "lr_scale") and by `frozen`
    names, whose groups carry "freeze_epochs" (the engine drops their gradients before that epoch).

    A name in the skip list matches a parameter equal to it or one that ends with "." + it, so a model
    wrapped in a parent module still gets the right group.
    """
    skip_names = _no_decay_names(model) | set(skip)
    frozen = set(frozen)
    groups: dict[tuple[bool, float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skipped = _undecayed(name, p, skip_names)
        scale = 1.0 if lr_scales is None else float(lr_scales[name])
        key = (skipped, scale, name in frozen)
        if key not in groups:
            group = {"params": [], "weight_decay": 0.0 if skipped else weight_decay}
            if lr_scales is not None:
                group["lr_scale"] = scale
            if name in frozen and freeze_epochs > 0:
                group["freeze_epochs"] = int(freeze_epochs)
            groups[key] = group
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], -k[1], k[2]))]


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
    encoder_lr_scale: float = 1.0,
    layer_decay: float = 1.0,
    freeze_encoder_epochs: int = 0,
) -> torch.optim.Optimizer:
    """AdamW (pretraining) or SGD with Nesterov momentum (fine-tuning); no decay on norms, biases and
    `model.no_weight_decay()` names. `lr` is the peak learning rate; the engine rescales every group
    each step by the schedule times the group's "lr_scale".

    Encoder-aware fine-tuning (defaults = the paper: one lr for all): `encoder_lr_scale` multiplies
    the lr of the encoder, `layer_decay` < 1 decays it layer-wise (see `layer_lr_scales`), and
    `freeze_encoder_epochs` = K leaves the encoder untouched for the first K epochs (decoder warm-up).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name={name!r}: expected one of {sorted(OPTIMIZERS)}")
    if freeze_encoder_epochs < 0:
        raise ValueError(f"optim.freeze_encoder_epochs={freeze_encoder_epochs}: expected >= 0")
    aware = encoder_lr_scale != 1.0 or layer_decay != 1.0 or freeze_encoder_epochs > 0
    scales = layer_lr_scales(model, encoder_lr_scale=encoder_lr_scale, layer_decay=layer_decay) if aware else None
    frozen = ()
    if freeze_encoder_epochs > 0:
        layer_of = getattr(model, "encoder_layer_id", None)
        frozen = ([n for n, _ in model.named_parameters() if layer_of(n) is not None] if callable(layer_of)
                  else sorted(encoder_names(model) or ()))
    groups = param_groups(model, weight_decay, lr_scales=scales, frozen=frozen, freeze_epochs=freeze_encoder_epochs)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **multi_tensor_kernel(groups))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **multi_tensor_kernel(groups))


def multi_tensor_kernel(groups: Iterable[dict] | Iterable[torch.Tensor]) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a floating-point tensor on a CPU or CUDA device
    (one kernel updates all of them), else ``{"foreach": True}``. Without either, torch's AdamW and
    SGD loop over the parameters on a CPU, one small kernel per tensor and update rule."""
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return {"fused": True} if fused else {"foreach": True}


KERNEL_FLAGS = ("fused", "foreach")


def _without_frozen(optimizer: torch.optim.Optimizer, state: dict, model: nn.Module) -> dict | None:
    """``state`` renumbered for ``optimizer`` when it was saved with the parameters of ``model`` that are frozen
    now still in its groups (a resenc run written before its unused segmentation heads were frozen): each
    frozen parameter sat, in ``model.named_parameters()`` order, in the first group of its kind (decayed or
    not, lr scale 1, not frozen for early epochs), with no optimiser state (it never had a gradient). None
    when ``state`` does not differ from the optimiser that way."""
    named = list(model.named_parameters())
    order = {id(p): i for i, (_, p) in enumerate(named)}
    skip_names = _no_decay_names(model)
    frozen = [(name, p) for name, p in named if not p.requires_grad]
    numbered = optimizer.state_dict()["param_groups"]
    saved_groups, out = state["param_groups"], {"state": {}, "param_groups": []}
    if not frozen or len(saved_groups) != len(numbered):
        return None
    taken: set[int] = set()
    for group, ids, saved in zip(optimizer.param_groups, numbered, saved_groups):
        params = list(group["params"])
        extra = len(saved["params"]) - len(params)
        if extra:
            kind = _undecayed(next(n for n, p in named if p is params[0]), params[0], skip_names)
            plain = group.get("lr_scale", 1.0) == 1.0 and not group.get("freeze_epochs")
            found = [p for name, p in frozen if plain and id(p) not in taken and _undecayed(name, p, skip_names) == kind]
            if len(found) != extra:
                return None
            taken |= {id(p) for p in found}
            params = sorted(params + found, key=lambda p: order[id(p)])
        before = dict(zip((id(p) for p in params), saved["params"]))
        if any(before[id(p)] in state["state"] for p in params if not p.requires_grad):
            return None
        for p, new_id in zip(group["params"], ids["params"]):
            if before[id(p)] in state["state"]:
                out["state"][new_id] = state["state"][before[id(p)]]
        out["param_groups"].append({**saved, "params": ids["params"]})
    return out if len(taken) == len(frozen) else None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, model: nn.Module | None = None) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimiser's update kernel: torch restores each
    group's saved options, ``fused``/``foreach`` included, so a state saved by the per-parameter loop
    (or on another device) would switch a resumed run back to it. The kernel is how, not what, is
    computed; lrs, moments and step counts come from ``state``. With ``model``, a state saved while
    parameters frozen now were still trained (`_without_frozen`) is read without them, said in one line."""
    kernels = [{k: g.get(k) for k in KERNEL_FLAGS} for g in optimizer.param_groups]
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if model is not None and [len(g["params"]) for g in state["param_groups"]] != sizes:
        renumbered = _without_frozen(optimizer, state, model)
        if renumbered is not None:
            names = [name for name, p in model.named_parameters() if not p.requires_grad]
            print(f"[asa] the optimiser state was written by an earlier asa that still listed {len(names)} parameter(s) "
                  f"frozen now ({', '.join(names[:4])}{', …' if len(names) > 4 else ''}: no loss reads them, they "
                  "never had a gradient); read without them", file=sys.stderr, flush=True)
            state = renumbered
    optimizer.load_state_dict(state)
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)
