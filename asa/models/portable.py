"""Pretrained encoders as plain modules, rebuilt from a file alone (no run config, no Hydra).

:func:`load_encoder` reads an encoder export (``encoder.safetensors`` or ``encoder.pt``) or a full
checkpoint (pretraining or fine-tuning ``last.pt`` / ``best.pt``), rebuilds the network from the
network spec recorded in it (:func:`asa.models.build_network`) and returns its encoder with the
weights loaded, in eval mode: a :class:`VolumeEncoder` around the SW-ViT for the ASA family, MONAI's
``SwinTransformer`` for SA-Swin and SwinUNETR.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from asa.models.weights import load_weights
from asa.models.swvit.volume import VolumeEncoder
from asa.models.family import family_of
from asa.models.keys import EncoderKeys, encoder_keys
from asa.models.registry import build_network, current_spec, register_network
from asa.models.blocks.encoder_weights import match_file_encoder

__all__ = ["EncoderOf", "VolumeEncoder", "encoder_export", "load_encoder", "network_encoder"]


@register_network("encoder", kind="encoder")
class EncoderOf(nn.Module):
    """The encoder of a network alone, under the module names it has there: its state-dict keys are an
    encoder export's (``encoder.*``, ``swinViT.*``, ``vit.*``), so the network of a model folder's
    ``model.safetensors`` is built from its ``config.json`` and loads it with ``strict=True``.

    Args:
        network: the spec ``{"arch", "kwargs"}`` of the source network (one that declares an encoder).

    ``forward`` is the encoder's as `load_encoder` returns it (`network_encoder`).
    """

    def __init__(self, network: Mapping) -> None:
        super().__init__()
        spec = current_spec(network)
        net = build_network(spec)
        keys = encoder_keys(net)  # refused, naming the network, for one without an encoder
        self.arch, self.spe_frame = spec["arch"], getattr(net, "spe_frame", "brain")
        for name in dict.fromkeys(prefix.split(".", 1)[0] for prefix in keys.prefixes):
            self.add_module(name, getattr(net, name))
        keys.declare(self)

    def forward(self, *args, **kwargs):
        return network_encoder(self, self.arch)(*args, **kwargs)


def _spec_and_weights(path: str | os.PathLike, state: Mapping) -> tuple[dict, nn.Module, dict[str, torch.Tensor]]:
    """(network spec, the network it builds, the encoder's weights of the file under their keys in the network) of a
    file's content: those under the encoder's prefixes, as the network declares them (`asa.models.keys`)."""
    spec = state.get("network")
    if not isinstance(spec, Mapping) or "arch" not in spec:
        raise ValueError(
            f"{path} records no network spec ({{'arch', 'kwargs'}}), so its encoder cannot be rebuilt from the file "
            "alone; expected an encoder export or a checkpoint written by asa-pretrain / asa-finetune")
    spec = current_spec(spec)
    source = state["encoder"] if "encoder" in state else state.get("model")
    if not isinstance(source, Mapping):
        raise ValueError(f"{path} holds neither an 'encoder' nor a 'model' state dict")
    try:
        net = build_network(spec)  # the whole network (a pretraining decoder too); its encoder is what it declares
    except (ValueError, TypeError) as err:
        where = f"model folder {path} (model.safetensors and config.json)" if Path(path).is_dir() else str(path)
        raise ValueError(f"{where}: the network spec recorded in it does not build its {spec['arch']!r} network "
                         f"({err}); the file was edited or written by another tool: export it again") from err
    keys = EncoderKeys.declared(net)
    if keys is None:
        raise ValueError(f"{path} holds a {spec['arch']!r} network, which has no encoder (it declares no "
                         "key_to_encoder)")
    weights = {k.removeprefix("module."): v for k, v in source.items()
               if k.removeprefix("module.").startswith(keys.prefixes)}
    if not weights:
        shown = keys.prefixes[0] if len(keys.prefixes) == 1 else keys.prefixes
        raise ValueError(f"{path} holds no weights starting with {shown!r} (the {spec['arch']!r} encoder)")
    return dict(spec), net, weights


def encoder_export(path: str | os.PathLike, state: Mapping | None = None) -> dict:
    """The encoder export (``encoder.pt``'s dict: ``encoder`` with the module prefix kept, ``network``,
    ``source``, ``step``, ``cohort`` when the file carries one) of an export or checkpoint of any network that
    declares an encoder (pretraining or fine-tuning); ``state``: the file's content when already read."""
    state = load_weights(path) if state is None else state
    spec, _, weights = _spec_and_weights(path, state)
    source = state.get("source") or Path(path).name
    export = {"encoder": dict(weights), "network": spec, "source": str(source),
              "step": int(state.get("step") or 0)}
    if state.get("cohort") is not None:  # the pretraining cohort's digests travel with the encoder
        export["cohort"] = state["cohort"]
    return export


def network_encoder(net: nn.Module, arch: str) -> nn.Module:
    """The encoder of a network of ``arch`` as `load_encoder` returns it: the submodule holding the encoder and
    its stem as the network declares them (`asa.models.keys.EncoderKeys.module`), as its family's encoder face
    gives it (`asa.models.face.EncoderFace.module`: a :class:`VolumeEncoder` around an SW-ViT); weights as they
    are."""
    encoder = net.get_submodule(encoder_keys(net).module)
    family = family_of(arch)
    return encoder if family is None or family.face is None else family.face.module(encoder, net)


def load_encoder(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                 state: Mapping | None = None, verbose: bool = True) -> nn.Module:
    """The pretrained encoder of an export or checkpoint, weights loaded, in eval mode.

    ``path``: ``encoder.safetensors`` or ``encoder.pt`` (``asa-pretrain``'s exports), a model folder
    of ``asa-export`` (or a hub id ``hf://owner/name`` with ``huggingface_hub`` installed) or a full
    checkpoint (``last.pt`` / ``best.pt`` of ``asa-pretrain`` or ``asa-finetune``); ``state``: its
    content when already read (`asa.models.load_weights`). The network is
    rebuilt from the spec recorded in the file; every encoder weight must be present and fit.
    Returns, for ASA networks (``asa_pretrain``, ``swvit_unetr``, ``case_head``), a :class:`VolumeEncoder`
    (x [B, C, D, H, W] -> tokens [B, N, E]); for SA-Swin and SwinUNETR MONAI's ``SwinTransformer``
    (``forward(x, normalize=True)`` -> the five stage outputs [B, F·2^k, D/2^(k+1), ...], k = 0..4);
    for UNETR MONAI's ``ViT`` (-> (tokens, hidden states)).

    A published residual-encoder checkpoint (nnssl / OpenMind ResEnc-L ``checkpoint_final.pth``, an nnU-Net v2
    checkpoint, an AMAES Lightning ``.ckpt``: `asa.io.foreign`) gives the ``resenc`` encoder
    (dynamic-network-architectures' ``ResidualEncoder``: x [B, C, D, H, W] -> the stage outputs), its topology
    read off the tensors; every encoder tensor of the file must fit and every one of the network be there, and
    the load report (tensors loaded / missing / unexpected / shape-mismatched, and the checkpoint's adaptation
    plan) is printed when ``verbose``.
    """
    state = load_weights(path, map_location) if state is None else state
    spec, net, weights = _spec_and_weights(path, state)
    keys = encoder_keys(net)  # the encoder and its stem, as the network declares them
    if "foreign" in state:  # a published checkpoint: matched tensor by tensor, reported in one block
        update, report = match_file_encoder(keys.state(net), dict(state), path, in_proj=keys.in_proj_weights,
                                            image_channels=int(spec["kwargs"]["in_channels"]),
                                            where=f"asa.load_encoder({str(path)!r})")
        keys.load(net, update)
        if verbose:
            print(f"pretrained encoder from {path}:\n{report}")
        return network_encoder(net, spec["arch"]).to(map_location).eval()
    try:
        if keys.module:  # one module holds the encoder and its stem: loaded strictly
            net.get_submodule(keys.module).load_state_dict(
                {k[len(keys.module) + 1:]: v for k, v in weights.items()}, strict=True)
        else:  # a stem beside the encoder (Primus): every tensor of both
            keys.load(net, weights)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the {spec['arch']!r} encoder recorded in it: {err}") from err
    return network_encoder(net, spec["arch"]).to(map_location).eval()
