"""What a network takes besides the image and what it offers, declared when it is built.

A network sets ``self.capabilities = Capabilities(...)`` in its constructor (or on its class); the training steps,
sliding-window inference, prediction and the diagnostics read it with :func:`capabilities`, never
by probing for attributes. A network that declares nothing (MONAI's UNETR, SwinUNETR) takes the
image alone and offers nothing more. The crop a network takes is :func:`input_size`; both read the network
inside the wrappers training puts around it (:func:`unwrap`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["Capabilities", "capabilities", "input_size", "unwrap"]


@dataclass(frozen=True)
class Capabilities:
    regions: bool = False  # forward(x, regions=[B, 1, D, H, W]): a region map per voxel (region attention)
    offsets: bool = False  # forward(x, offsets=[B, 3]): the crop's origin in patches on the brain frame
    patch_size: int | None = None  # with reference_grid: the lattice crops and windows start on
    reference_grid: tuple[int, int, int] | None = None  # the brain frame's grid, in patches
    zero_encoder: bool = False  # zero_encoder_states(): the encoder-reliance diagnostic
    crop_lattice: int | None = None  # a case network: the voxel step its shifted test-time crops keep to
    deep_supervision: int = 0  # > 0: in training, forward returns that many logits, finest first (nnU-Net's deep supervision)
    crop_multiple: int | None = None  # every crop edge must be a multiple of it (SwinUNETR: 2^5, its five halvings)
    crop_min: int | None = None  # and at least this (SwinUNETR: 64, a bottleneck of one voxel cannot be normalised)
    # the settings whose parts assume a left-right symmetric brain MRI with its mid-sagittal plane at the crop
    # centre (the symmetric position code, SACA, SA-Swin's mirrored pass): asa-finetune warns on other data
    symmetry: tuple[str, ...] = ()

    def crop_fault(self, crop: int) -> str | None:
        """Why the network cannot take crops of edge ``crop``, or None when it can."""
        m, low = self.crop_multiple or 1, self.crop_min or 1
        if crop >= low and crop % m == 0:
            return None
        wanted = " and ".join(([f"a multiple of {m}"] if m > 1 else []) + ([f"at least {low}"] if low > 1 else []))
        fit = max(low + (-low) % m, crop - crop % m)
        return f"the network takes crops whose edge is {wanted}: e.g. {fit}"

    def __post_init__(self) -> None:
        if (self.patch_size is None) != (self.reference_grid is None):
            raise ValueError("Capabilities: patch_size and reference_grid come together (the lattice) or not at all")

    @property
    def lattice(self) -> tuple[int, tuple[int, int, int]] | None:
        """(patch size, reference size in voxels) of a network whose crops and windows start on its
        patch lattice, else None."""
        if self.patch_size is None or self.reference_grid is None:
            return None
        return self.patch_size, tuple(int(g) * self.patch_size for g in self.reference_grid)  # type: ignore[return-value]


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself: ``model`` without DistributedDataParallel's (or DataParallel's) wrapper
    and without a whole-model ``torch.compile`` wrapper (block-wise `compile_blocks` keeps the module)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        else:
            return model


NOTHING = Capabilities()


def capabilities(model: nn.Module) -> Capabilities:
    """The capabilities ``model`` (or the network inside its DDP / compile wrapper) declared."""
    declared = getattr(unwrap(model), "capabilities", NOTHING)  # set in __init__, or on the class
    if not isinstance(declared, Capabilities):
        raise TypeError(f"{type(unwrap(model)).__name__}.capabilities must be an asa.models.Capabilities, "
                        f"got {type(declared).__name__}")
    return declared


def crop_edges(size: int | float | Sequence[int]) -> tuple[int, ...]:
    """A crop as a spec records it, one edge (a cube) or one per axis, as its edges per axis."""
    return (int(size),) * 3 if isinstance(size, (int, float)) else tuple(int(s) for s in size)


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """The crop ``model`` (or the network inside its wrapper) takes, voxels per axis: its declared ``img_size``
    attribute, else the ``img_size`` of the spec it was built from (every network asa builds is handed its
    crop as ``img_size``, `asa.models.register_network`); one edge means a cube."""
    net = unwrap(model)
    size = getattr(net, "img_size", None)
    if size is None:
        size = (getattr(net, "network_kwargs", None) or {}).get("img_size")
    if size is None:
        raise ValueError(f"{type(net).__name__}: no input size declared (an img_size attribute, or an img_size "
                         "keyword argument in its network spec)")
    edges = crop_edges(size)
    if len(edges) != 3:
        raise ValueError(f"{type(net).__name__}: img_size must be one edge or three, got {size!r}")
    return edges  # type: ignore[return-value]
