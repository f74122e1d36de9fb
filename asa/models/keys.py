"""Where a network keeps its transferable encoder: as the network declares it, with dynamic-network-architectures'
names (``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``; ``architectures/abstract_arch.py``). Every network
with an encoder declares them, on its class or its instance; the lr split, `asa.load_encoder`, the encoder export
and the weight writers read them here (`encoder_keys`), from the network and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ["EncoderKeys", "encoder_keys"]


class EncoderKeys(NamedTuple):
    """A network's transfer keys; unpacked in a class body, ``key_to_encoder, key_to_stem, keys_to_in_proj = KEYS``
    declares them.

    Args:
        encoder: the encoder's module key (``encoder.stages`` of a residual-encoder U-Net).
        stem: the stem's module key, inside the encoder or beside it (None: the encoder holds it).
        in_proj: the input projection's module keys: the stem's first layer, under every name the state dict
            gives its one tensor.
    """

    encoder: str
    stem: Optional[str] = None
    in_proj: tuple[str, ...] = ()

    @classmethod
    def declared(cls, net: object) -> EncoderKeys | None:
        """The keys ``net`` declares (None: it declares no ``key_to_encoder``)."""
        encoder = getattr(net, "key_to_encoder", None)
        if encoder is None:
            return None
        return cls(encoder, getattr(net, "key_to_stem", None), tuple(getattr(net, "keys_to_in_proj", ())))

    def declare(self, net: nn.Module) -> nn.Module:
        """Declare these keys on the instance ``net`` (a network built by a function, e.g. MONAI's)."""
        net.key_to_encoder, net.key_to_stem, net.keys_to_in_proj = self.encoder, self.stem, tuple(self.in_proj)
        return net

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The state-dict prefixes of the encoder and its stem (``"<key>."``; a stem inside the encoder adds none)."""
        keys = [self.encoder]
        if self.stem is not None and not (self.stem + ".").startswith(self.encoder + "."):
            keys.append(self.stem)
        return tuple(f"{key}." for key in keys)

    @property
    def module(self) -> str:
        """The network's top-level submodule holding the encoder and its stem (``encoder`` of a residual-encoder
        U-Net, whose ``encoder.stages`` and ``encoder.stem`` are declared; "": the network itself, for a stem beside
        the encoder, as Primus's ``down_projection`` beside ``eva``)."""
        tops = {prefix.split(".", 1)[0] for prefix in self.prefixes}
        return tops.pop() if len(tops) == 1 else ""

    @property
    def in_proj_weights(self) -> tuple[str, ...]:
        """The weight keys of the input projection (its one tensor under every name)."""
        return tuple(f"{key}.weight" for key in self.in_proj)

    def state(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """The encoder's (and stem's) tensors of ``net``, under their keys in ``net``'s state dict."""
        return {key: value for key, value in net.state_dict().items() if key.startswith(self.prefixes)}

    def load(self, net: nn.Module, update: Mapping[str, torch.Tensor]) -> None:
        """Load ``update`` into ``net``: every encoder tensor, nothing else (else ``RuntimeError``, naming the keys)."""
        own = self.state(net)
        missing, outside = sorted(set(own) - set(update)), sorted(set(update) - set(own))
        if missing or outside:
            raise RuntimeError(f"encoder load: missing {missing[:5]}, outside the encoder {outside[:5]}")
        net.load_state_dict(dict(update), strict=False)


def encoder_keys(net: nn.Module) -> EncoderKeys:
    """The transfer keys ``net`` declares; a network that declares none (no encoder, e.g. DynUNet) is refused,
    naming it."""
    keys = EncoderKeys.declared(net)
    if keys is None:
        name = getattr(net, "network_arch", None) or type(net).__name__
        raise ValueError(f"network {name!r} declares no encoder (key_to_encoder, key_to_stem, keys_to_in_proj, as "
                         "dynamic-network-architectures' networks declare theirs)")
    return keys
