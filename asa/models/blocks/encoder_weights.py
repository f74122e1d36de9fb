"""An encoder's tensors taken over from a pretraining file key by key (`match_encoder_weights`), and the
report of what was loaded, missing, unexpected, adapted or of another shape (`LoadReport`): the part of
every network's ``load_pretrained``. `match_file_encoder` takes a whole file's encoder into a network that declares
its input projection (dynamic-network-architectures' ``keys_to_in_proj``), a published checkpoint included: every
tensor matched, else refused with the report.

The input projection takes the image channels (and the coordinate channel, last, when the network has one): a file
of one image channel is adapted to k by repeating that channel's weights and dividing them by k, which keeps the
response to a volume replicated over the channels (as the SW-ViT's stem is adapted); the coordinate channel's
weights are kept as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asa.io.foreign import describe_foreign

__all__ = ["LoadReport", "match_encoder_weights", "match_file_encoder"]


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


def _module_prefixes(own: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """The top-level modules (``"<name>."``) the encoder state ``own`` lives under: a file's tensors under them are
    the encoder's, those of the network or not."""
    return tuple(sorted({key.split(".", 1)[0] + "." for key in own}))


def _adapt_stem(value: torch.Tensor, image_channels: int, coord: bool, key: str) -> tuple[torch.Tensor, str | None]:
    """A stem weight [C_out, c (+1), k, k, k] of one image channel for ``image_channels`` (+ the coordinate)."""
    own = value.shape[1] - int(coord)
    if own != 1 or image_channels == 1:
        return value, None
    image, rest = value[:, :1], value[:, 1:]
    adapted = torch.cat([image.repeat(1, image_channels, 1, 1, 1) / image_channels, rest], dim=1)
    return adapted, f"{key} 1 -> {image_channels} image channels (repeated, divided by {image_channels})"


def _first(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def match_file_encoder(own: dict[str, torch.Tensor], blob: dict, path: str | Path, *, in_proj: Sequence[str],
                       image_channels: int, coord: bool = False, where: str | None = None
                       ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The encoder tensors of the file content ``blob`` (a pretraining checkpoint or encoder export of the network,
    or a published checkpoint read as one: ``foreign``) for a network whose encoder state is ``own`` (its keys in
    the network, `asa.models.family.EncoderKeys.state`; the file's tensors under the same top-level modules are the
    encoder's), the input projection (``in_proj``: its weight keys under every name, as the network declares them,
    `asa.models.family.EncoderKeys.in_proj_weights`) adapted to ``image_channels`` (+ the coordinate channel, last,
    when ``coord``), and the report.

    Refused (``ValueError`` naming ``path``, the option and the first keys at fault, the whole report
    attached): any encoder tensor of the network the file does not hold; for a published checkpoint also any
    encoder tensor of the file the network does not take, or of another shape. ``where``: how the refusal names
    the file (default ``model.pretrained=<path>``)."""
    path = Path(path)
    where = where or f"model.pretrained={path}"
    foreign = blob.get("foreign")
    source = {k.removeprefix("module."): v for k, v in (blob["encoder"] if "encoder" in blob else blob["model"]).items()}
    adapted = []
    for key in in_proj:
        if key in source:
            source[key], note = _adapt_stem(source[key], image_channels, coord, key)
            adapted += [note] if note else []
    stem = source.get(in_proj[0])
    if stem is not None and in_proj[0] in own and stem.shape[1] != own[in_proj[0]].shape[1]:
        file_channels = stem.shape[1] - int(coord)
        raise ValueError(f"{where}: its encoder takes {file_channels} image channel(s), this network "
                         f"{image_channels} (the data's channels); the file is fine, the channels differ: a stem is "
                         "adapted from a 1-channel file only, so fine-tune it on data with "
                         f"{file_channels} channel(s), or take a 1-channel encoder")
    update, report = match_encoder_weights(own, source, _module_prefixes(own), in_proj[0], path,
                                           refuse_mismatch=foreign is None)
    report.adapted = adapted
    if foreign is not None:
        report.notes = describe_foreign(foreign)
    faults = [f"{len(report.missing)} encoder tensor(s) of the network are not in the file ({_first(report.missing)})"
              ] if report.missing else []
    if foreign is not None:  # one parameter under two names (conv / all_modules.0): the file must agree with itself
        by_storage: dict[int, str] = {}
        for key, value in own.items():
            first = by_storage.setdefault(value.data_ptr(), key)
            if first != key and key in update and first in update and not torch.equal(update[key], update[first]):
                faults.append(f"{first} and {key} are one tensor of the network but differ in the file")
        faults += [f"{len(report.unexpected)} encoder tensor(s) of the file are not in the network "
                   f"({_first(report.unexpected)})"] if report.unexpected else []
        faults += [f"{len(report.mismatched)} of another shape ({_first(report.mismatched, 3)})"
                   ] if report.mismatched else []
    if faults:
        hint = ("an encoder of another size or crop plan (model.size, data.crop)" if foreign is None else
                f"a damaged {foreign['layout']} checkpoint (the network's topology is read off the file's own "
                "encoder tensors, so every one of them should fit)")
        counts = (f"loaded {len(report.loaded)} / missing {len(report.missing)} / unexpected {len(report.unexpected)}"
                  f" / shape-mismatched {len(report.mismatched)} encoder tensors")
        raise ValueError("\n".join([f"{where}: refused, not every encoder tensor matched: "
                                     f"{'; '.join(faults)}: {hint}", counts, *report.notes]))
    return update, report
