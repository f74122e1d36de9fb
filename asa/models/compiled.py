"""``torch.compile`` for the networks' repeated parts, keeping parameter names (and checkpoints) unchanged."""

from __future__ import annotations

from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
import torch
from torch import nn

from asa.models.swvit.swvit import SWBlock

COMPILED_PARTS = (SWBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock, UnetOutBlock)


def compile_blocks(model: nn.Module, *, dynamic: bool = False) -> int:
    """Compile, in place, every SW-ViT block and every UNETR decoder block of ``model``
    (``nn.Module.compile``: the module keeps its parameters and state-dict keys; only its
    forward is replaced by the compiled graph). Returns how many parts were compiled.

    Windows, crops and token counts are fixed during a run, so static shapes (``dynamic=False``)
    give the best kernels; a new shape triggers one recompilation. Dynamo's recompile limit is raised to
    four graphs per compiled part, so that every block gets its own graph.
    """
    parts = [m for m in model.modules() if isinstance(m, COMPILED_PARTS)]
    # one graph per distinct block (static integer attributes such as a window's shift differ between blocks):
    # past dynamo's recompile limit (8 per code object) the remaining blocks would run eager, silently
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, 4 * len(parts))
    for part in parts:
        part.compile(dynamic=dynamic)
    return len(parts)

