"""The convolutional families (`asa.models.family`): nnU-Net's residual-encoder U-Net (``resenc``), with its masked
twin ``resenc_pretrain`` and nnU-Net's and nnssl's file formats, and MONAI's DynUNet (``dynunet``: no encoder
file, trained from scratch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asa.models.cnn.masked import ResEncPretrainModel
from asa.models.cnn.resenc import RESENC_SIZES
from asa.models.family import Family, StageTokens, register_family

__all__ = ["DYNUNET", "RESENC"]


def _resenc_export(form: str, spec: Mapping[str, Any]) -> str | None:
    """nnU-Net and nnssl build the network without the coordinate channel: an encoder pretrained with it is refused."""
    if (spec.get("kwargs") or {}).get("coord_channel"):
        return ("an encoder pretrained with the coordinate channel (model.coord_channel=true), which nnU-Net does "
                "not feed; export one pretrained without it")
    return None


RESENC = register_family(Family(
    "resenc", face=StageTokens(), masked="resenc_pretrain", pretrain_settings=ResEncPretrainModel, segmenter="resenc",
    exports=("nnunet", "nnssl"), export_check=_resenc_export, presets={size: {"size": size} for size in RESENC_SIZES}))
DYNUNET = register_family(Family("dynunet"))
