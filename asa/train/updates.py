"""Whether a network's encoder learns: the relative update ‖Δw‖/‖w‖ of every optimiser step, for the
encoder's parameters and for everything else (docs/method.md §1.7).

Under the paper's one-lr SGD the encoder's relative update is ~1/1000 of the decoder's: a "trained"
encoder then stays where pretraining (or the initialisation) left it. Every fine-tuning run logs
``train/rel_update/encoder`` and ``train/rel_update/decoder`` so that this shows.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asa.models.keys import EncoderKeys

__all__ = ["RelativeUpdate", "encoder_names", "encoder_split", "REL_UPDATE_KEYS", "REL_UPDATE_GAP", "update_gap_note"]

REL_UPDATE_KEYS = ("train/rel_update/encoder", "train/rel_update/decoder")
REL_UPDATE_GAP = 30.0  # decoder / encoder relative update above which the console says the encoder barely moves


def encoder_names(model: nn.Module) -> set[str] | None:
    """Names of the parameters of a network's encoder and its stem, as the network declares them
    (`asa.models.keys`: ``encoder`` of ASASegmenter, ``vit`` of UNETR, ``swinViT`` of SwinUNETR / SA-Swin, Primus's
    ``eva`` and ``down_projection``); None for a network that declares none."""
    keys = EncoderKeys.declared(model)
    if keys is None:
        return None
    return {name for name, _ in model.named_parameters() if name.startswith(keys.prefixes)}


def encoder_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]] | None:
    """(encoder parameters, every other trainable parameter) of a network with a registered encoder
    (:func:`encoder_names`); None for a network without one, or with nothing trainable on a side."""
    names = encoder_names(model)
    if names is None:
        return None
    encoder, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (encoder if name in names else rest).append(p)
    return (encoder, rest) if encoder and rest else None


class RelativeUpdate:
    """‖Δw‖ / ‖w‖ of one optimiser step over each parameter group, the norms taken over the whole group
    (all its tensors as one vector): call :meth:`before` just before ``optimizer.step()`` and
    :meth:`after` just after.

    groups: name -> parameters, e.g. ``{"encoder": [...], "decoder": [...]}``.
    """

    def __init__(self, groups: dict[str, Sequence[nn.Parameter]]) -> None:
        self.groups = {name: list(params) for name, params in groups.items()}
        self._snapshot: dict[str, list[torch.Tensor]] | None = None

    @classmethod
    def of(cls, model: nn.Module) -> RelativeUpdate | None:
        """The encoder / decoder monitor of a network with a registered encoder, else None."""
        split = encoder_split(model)
        return None if split is None else cls({"encoder": split[0], "decoder": split[1]})

    @torch.no_grad()
    def before(self) -> None:
        self._snapshot = {name: [p.detach().clone() for p in params] for name, params in self.groups.items()}

    @torch.no_grad()
    def after(self) -> dict[str, torch.Tensor]:
        """{"train/rel_update/<group>": ‖w_after − w_before‖ / ‖w_before‖} for the step since :meth:`before`, as
        0-dim tensors on the parameters' device: no host sync here (`asa.train.reporting.TrainLog` reads a
        logging window's sum once)."""
        if self._snapshot is None:
            raise RuntimeError("RelativeUpdate.after() without before()")
        out = {}
        for name, params in self.groups.items():
            old = self._snapshot[name]
            delta = torch._foreach_sub([p.detach() for p in params], old)
            num = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(delta)).float())
            den = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(old)).float())
            out[f"train/rel_update/{name}"] = num / den.clamp_min(1e-12)
        self._snapshot = None
        return out

    def forget(self) -> None:
        """Drop the snapshot of :meth:`before` (a step that did not update: a skipped non-finite gradient)."""
        self._snapshot = None


def update_gap_note(means: dict[str, float]) -> str | None:
    """A console note when the decoder's mean relative update exceeds the encoder's by more than
    ``REL_UPDATE_GAP``× in a logging window (None otherwise, or without both values)."""
    enc, dec = (means.get(k) for k in REL_UPDATE_KEYS)
    if enc is None or dec is None or enc <= 0 or dec <= REL_UPDATE_GAP * enc:  # 0: a frozen encoder
        return None
    return (f"rel. update encoder {enc:.2g} vs decoder {dec:.2g} ({enc / dec:.2g}×): the encoder barely moves; "
            "optim=adamw (the encoder-aware recipe) or a larger optim.encoder_lr_scale changes that")
