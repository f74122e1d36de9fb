"""An encoder in the layout MONAI's ``SwinUNETR.load_from`` reads (the original self-supervised Swin weights':
``{"state_dict": {"module.<key>": tensor}}``, the MLP as ``fc1`` / ``fc2``), beside the model folder of a family whose
networks are SwinUNETRs:
``SwinUNETR(<config.json's sizes>).load_from(torch.load("swin_unetr_ssl.pt", weights_only=True))``."""

from __future__ import annotations

import contextlib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.networks.nets import SwinUNETR

from asa.formats.base import ENCODER, Format, Job, Part, family_fault, register_format
from asa.io import save_checkpoint
from asa.models import load_weights
from asa.models.family import Family
from asa.models.portable import encoder_export
from asa.models.registry import registered_networks

__all__ = ["MONAI", "MONAI_FILE", "export_for_monai", "monai_layout"]

MONAI_FILE = "swin_unetr_ssl.pt"


def _takes(family: Family) -> bool:
    """Whether a network of ``family`` is a MONAI SwinUNETR (its builder is one, or declares it returns one): the
    family's encoder is the ``swinViT`` that ``load_from`` fills."""
    def built(builder: Any) -> Any:
        with contextlib.suppress(Exception):  # a builder whose annotations do not resolve declares nothing
            return builder if isinstance(builder, type) else typing.get_type_hints(builder).get("return")
    return any(r.family == family.name and isinstance(cls := built(r.builder), type) and issubclass(cls, SwinUNETR)
               for r in registered_networks().values())


def monai_layout(export: Mapping[str, Any]) -> dict[str, Any]:
    """``load_from``'s layout of the encoder export ``export`` (`asa.models.portable.encoder_export`)."""
    module = next(iter(export["encoder"])).split(".", 1)[0]  # the SwinViT's name in its network (swinViT)
    return {"state_dict": {"module." + k[len(module) + 1:].replace(".mlp.linear1.", ".mlp.fc1.")
                           .replace(".mlp.linear2.", ".mlp.fc2."): v for k, v in export["encoder"].items()}}


def export_for_monai(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the SwinViT weights of an SA-Swin (or SwinUNETR) export or checkpoint ``path`` to ``out`` in the layout
    ``SwinUNETR.load_from`` reads (see the module); a plain ``torch.save`` file of tensors, written atomically."""
    state = load_weights(path)
    export = encoder_export(path, state)
    fault = MONAI.fault(export["network"])
    if fault is not None:
        raise ValueError(f"{path} holds {fault} (SwinUNETR's layout); load its encoder with asa.load_encoder")
    return save_checkpoint(out, monai_layout(export))


class Monai(Format):
    """``swin_unetr_ssl.pt`` beside the model folder of a SwinUNETR-family encoder."""

    name, level, files = "monai", ENCODER, (MONAI_FILE,)

    def fault(self, spec: Mapping[str, Any]) -> str | None:
        return family_fault(spec, self.name, _takes)

    def part(self, job: Job) -> Part:
        assert job.export is not None
        layout = monai_layout(job.export)
        return Part({MONAI_FILE: lambda path: save_checkpoint(path, layout)},
                    f"\n`{MONAI_FILE}` is the encoder in the layout MONAI's `SwinUNETR.load_from` reads: "
                    f"`SwinUNETR(...).load_from(torch.load(\"{MONAI_FILE}\", weights_only=True))`, sizes as "
                    "`config.json`'s network states.\n")


MONAI = register_format(Monai())
