"""An encoder's tensors taken over from a pretraining file key by key (`match_encoder_weights`), and the
report of what was loaded, missing, unexpected, adapted or of another shape (`LoadReport`): the part of
every network's ``load_pretrained``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class LoadReport:
    """What a network's ``load_pretrained`` did with each encoder key (`match_encoder_weights`)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (shape) vs model (shape)"
    notes: list[str] = field(default_factory=list)  # a published checkpoint's adaptation plan, item by item

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} encoder tensors"]
        if self.adapted:
            lines.append(f"adapted input stem: {', '.join(self.adapted)}")
        lines.append(f"missing ({len(self.missing)}): {', '.join(self.missing) or '-'}")
        lines.append(f"unexpected ({len(self.unexpected)}): {', '.join(self.unexpected) or '-'}")
        if self.mismatched or self.notes:  # a published checkpoint's tensors are matched by shape: always said
            lines.append(f"shape-mismatched ({len(self.mismatched)}): {', '.join(self.mismatched) or '-'}")
        lines += self.notes
        return "\n".join(lines)


def match_encoder_weights(
    own: dict[str, torch.Tensor],
    source: dict[str, torch.Tensor],
    prefixes: tuple[str, ...],
    stem_key: str,
    path: str | Path,
    *,
    refuse_mismatch: bool = True,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of ``source`` (DDP ``module.`` prefixes allowed) a network with state ``own`` takes
    over under ``prefixes``, and the report of loaded / missing / unexpected / adapted keys.

    A 1-channel ``stem_key`` weight is adapted to k input channels by repeating it and dividing by k
    (the response to a volume replicated over the channels is kept). Any other shape mismatch, or no
    matching weight at all, raises ``ValueError`` naming ``path`` (with ``refuse_mismatch=False`` the
    mismatches are listed in the report's ``mismatched`` instead, for the caller to refuse with the whole report).
    """
    source = {k.removeprefix("module."): v for k, v in source.items()}
    report = LoadReport()
    update: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in source.items():
        if not key.startswith(prefixes):
            continue  # the pretraining decoder, heads, mask token, ...: not part of this network
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if key == stem_key and value.shape[1] == 1 and target.shape[1] > 1:
            k = target.shape[1]
            value = value.repeat(1, k, *([1] * (value.ndim - 2))) / k
            report.adapted.append(f"{key} 1 -> {k} channels")
        if value.shape != target.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        update[key] = value
        report.loaded.append(key)
    if mismatched and refuse_mismatch:
        raise ValueError(f"shape mismatch loading {path}:\n  " + "\n  ".join(mismatched))
    report.mismatched = mismatched
    report.missing = sorted(k for k in own if k.startswith(prefixes) and k not in update)
    if not update:
        raise ValueError(f"{path} contains no encoder weights (keys starting with {prefixes})")
    return update, report
