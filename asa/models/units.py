"""K networks of one architecture as one: their weights stacked on a leading axis and their forward one `torch.vmap`
over the stack (each convolution one grouped convolution, HFTA, MLSys 2021), the input shared. Training's fused
step (`asa.train.fused.Stacked`) runs its forward and backward so; `Units` is their forward alone, to validate or
score K networks in one pass over the cases (`asa.eval.predict.Predictor.of_units`)."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.instancenorm import _InstanceNorm

from asa.models.declared import capabilities

__all__ = ["Units", "functional_copy", "stack"]


def _norm_in_float(module: nn.Module, args: tuple) -> tuple:
    """An instance norm's input in float32 under the vmap, its dtype kept for `_norm_back`. Vmapped, the norm with
    per-unit affine weights runs as a weightless batch norm and multiplies the weights after; cuDNN's batch norm then
    makes its own weight in the input's dtype and refuses it for a half input ("Expected tensor for argument #2
    'weight' to have scalar type Float", fp16 or bf16 autocast on CUDA). Alone the norm computes in float32 and
    returns the input's dtype: so here, to rounding. At float32 both hooks change nothing."""
    module._fused_dtype = args[0].dtype
    return (args[0].float(), *args[1:])


def _norm_back(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._fused_dtype)


def functional_copy(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of the first of ``models`` for a vmap to swap their stacked tensors into, its instance norms computing
    in float32 (`_norm_in_float`); ``models`` that differ in a parameter's name or shape are refused, naming them.
    A copy: ResEnc's decoder holds its encoder, a module reached by two paths, and `functional_call` leaves such a
    module holding the vmap's tensors after the call."""
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if odd := [k for k, unit in enumerate(shapes) if unit != shapes[0]]:
        raise ValueError(f"fused units must share one network architecture: unit(s) {odd}'s parameters differ "
                         "from unit 0's by name or shape")
    net = copy.deepcopy(models[0])
    for module in net.modules():
        if isinstance(module, _InstanceNorm):
            module.register_forward_pre_hook(_norm_in_float)
            module.register_forward_hook(_norm_back)
    return net


def stack(models: Sequence[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, parameters and buffers) of ``models``: each stacked over them, [K, *shape], the parameters as
    fresh leaves (stacked without a graph: no detach of each unit's parameter, one op per unit each)."""
    units = [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        params = {name: torch.stack([unit[name] for unit in units]).requires_grad_(p.requires_grad)
                  for name, p in units[0].items()}
        units = [dict(m.named_buffers()) for m in models]
        buffers = {name: torch.stack([unit[name] for unit in units]) for name in units[0]}
    return params, {**params, **buffers}


class Units(nn.Module):
    """K networks as one for inference, with their weights when it was made: ``forward(x, **kwargs)`` -> every
    network's output side by side on the channel axis, [B, K · C, ...], one vmapped forward over the stacked
    weights (``tensors``, `stack`) swapped into ``net`` (`functional_copy`). It declares the network's
    capabilities."""

    def __init__(self, net: nn.Module, tensors: dict[str, torch.Tensor], count: int) -> None:
        super().__init__()
        self.net, self.tensors, self.count = net, tensors, count
        self.capabilities = capabilities(net)

    @classmethod
    def of(cls, models: Sequence[nn.Module]) -> Units:
        """``models`` (one architecture) as one, in eval mode."""
        return cls(functional_copy(models), stack(models)[1], len(models)).eval()

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        out = torch.vmap(lambda tensors: functional_call(self.net, tensors, (x,), kwargs))(self.tensors)
        return out.movedim(0, 1).flatten(1, 2)  # [K, B, C, ...] -> [B, K · C, ...]

    @contextlib.contextmanager
    def zero_encoder_states(self) -> Iterator[Units]:
        """Every network's encoder states zeroed (the network's own context, `asa.eval.reliance`): a network that
        declares ``zero_encoder``."""
        with self.net.zero_encoder_states():
            yield self
