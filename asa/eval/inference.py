"""Whole-volume inference: Gaussian-blended sliding windows with optional flip test-time augmentation, one engine per
network kind. A network with a patch lattice (`asa.models.ASASegmenter`: ``patch_size`` and ``reference_grid``) is
tiled by MONAI's windows on the brain frame's lattice (`blend_lattice`, `asa.data.lattice`), each window told its patch
offset from the reference grid as in training. Any other is tiled as nnU-Net tiles (`blend_box`: windows over the box
of non-zero voxels, logits blended and flipped back before the activation), so that its nnU-Net export (``asa-export
--format nnunet-results``) predicts what asa does (docs/weights-elsewhere.md)."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import nn

from asa.data.geometry import brain_centre
from asa.data.lattice import mirrored_origin, pad_to_lattice, reference_origin
from asa.data.preprocessing import brain_mask
from asa.models import capabilities


def flip_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (the empty one first): 2^k flip combinations."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    for a in axes:
        if a not in (0, 1, 2):
            raise ValueError(f"test-time flip axes must be spatial axes 0, 1, 2, got {a}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def lattice_overlap(roi_size: Sequence[int], overlap: float, patch: int) -> list[float]:
    """Per-axis overlap whose MONAI scan interval ``int(roi · (1 - overlap))`` is the multiple of
    ``patch`` nearest to the requested one (at least one patch), so every window start stays on the lattice."""
    out = []
    for roi in roi_size:
        step = max(patch, int(round(roi * (1 - overlap) / patch)) * patch)
        # +0.5: int() lands on step despite rounding; windows side by side (step = roi) are overlap 0 exactly
        out.append(0.0 if step >= roi else 1.0 - (step + 0.5) / roi)
    return out


def nnunet_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis of ``size`` voxels, as nnU-Net places them: the fewest windows of ``roi``
    whose stride is at most ``roi · (1 - overlap)``, spread evenly from the first voxel to the last (starts
    rounded half to even). ``size`` <= ``roi``: one window at 0 (the caller pads to ``roi``)."""
    if size <= roi:
        return [0]
    count = math.ceil((size - roi) / (roi * (1.0 - overlap))) + 1
    stride = (size - roi) / (count - 1)
    return [int(round(stride * i)) for i in range(count)]


def nonzero_box(image: torch.Tensor) -> tuple[slice, slice, slice]:
    """The bounding box of the voxels of image [C, X, Y, Z] that are non-zero in any channel (nnU-Net's crop
    before it tiles); the whole grid when no voxel is."""
    found = (image != 0).any(0)
    if not bool(found.any()):
        return tuple(slice(0, n) for n in found.shape)  # type: ignore[return-value]
    bounds = []
    for axis in range(3):
        hit = found.any(dim=tuple(a for a in range(3) if a != axis)).nonzero()[:, 0]
        bounds.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(bounds)  # type: ignore[return-value]


SW_BATCH_CAP = 32  # most windows per batch that ``sw_batch_size="auto"`` picks


def check_sw_batch_size(value: int | str, *, option: str = "sw_batch_size") -> int | str:
    """``value`` as a window count (a positive int) or ``"auto"``; anything else raises, naming ``option``."""
    if value == "auto":
        return "auto"
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or count != float(value):
        raise ValueError(f"{option}={value!r}: expected a positive number of windows per batch or 'auto' "
                         "(sized to memory)")
    return count


def window_batch_for_memory(window_bytes: int, budget_bytes: int, *, cap: int = SW_BATCH_CAP) -> int:
    """As many windows as ``budget_bytes`` holds when each adds ``window_bytes`` (the peak memory one
    window's forward pass takes), at least 1 and at most ``cap``."""
    if window_bytes <= 0:
        return cap
    return max(1, min(cap, int(budget_bytes) // int(window_bytes)))


def auto_sw_batch_size(probe: Callable[[], object], device: torch.device, *, fraction: float = 0.8) -> int:
    """The window batch of ``sw_batch_size="auto"`` on ``device``. CPU: 1 (one 128³ window keeps the cores busy, each
    extra one adds its activations: a 4 × 240 × 240 × 155 case in bf16 peaks at 1.7 GiB RSS, 2.1 GiB with two).
    CUDA: `window_batch_for_memory` of one window's peak memory (``probe()`` runs one) within ``fraction`` of the
    memory still usable (free on the device plus what torch's allocator holds unused)."""
    if device.type != "cuda":
        return 1
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe()
    torch.cuda.synchronize(device)
    window = torch.cuda.max_memory_allocated(device) - base
    free, _ = torch.cuda.mem_get_info(device)
    usable = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return window_batch_for_memory(window, int(fraction * usable))


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    *,
    roi_size: Sequence[int],
    multilabel: bool,
    overlap: float = 0.5,
    sw_batch_size: int | str = "auto",
    tta_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    centre: Sequence[float] | None = None,
    regions: torch.Tensor | None = None,
    units: int = 1,
) -> torch.Tensor:
    """Class or region probabilities of one whole volume: image [C, X, Y, Z] (any size) -> [K, X, Y, Z] float32 on
    the CPU. The windows run on ``device`` (the model's by default) and are blended on the CPU (memory: one window
    batch plus the output); every combination of flips along ``tta_axes`` is averaged. A lattice network is tiled by
    `blend_lattice` on the brain frame's lattice around ``centre`` (the brain centre [3] in voxels recorded at
    preprocessing; default: the centre of the non-zero voxels), any other by `blend_box`.

    Args:
        regions: [1, X, Y, Z] region map of a network with region attention, cut into the same windows and passed
            as ``model(window, regions=...)``.
        amp_dtype: the forward passes' autocast dtype; None: the caller's precision (fp32, or the engine's
            validation autocast).
        sw_batch_size: windows per forward pass, or ``"auto"`` (`auto_sw_batch_size`: 1 on a CPU, sized to the
            free memory on CUDA).
        units: how many networks' outputs ``model`` gives side by side on the channel axis
            (`asa.models.units.Units`: K fused units validated as one); each unit's K channels are activated alone,
            and the result is [units · K, X, Y, Z], unit u's channels at u · K … u · K + K - 1. The windows are cut
            and blended once.
    """
    sw_batch_size = check_sw_batch_size(sw_batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device

    def activation(t: torch.Tensor) -> torch.Tensor:  # a sigmoid per channel, or a softmax over each unit's classes
        if multilabel:
            return torch.sigmoid(t)
        return torch.cat([torch.softmax(part, dim=1) for part in t.chunk(units, dim=1)], dim=1)

    declared = capabilities(model)
    # amp_dtype None keeps the caller's precision (the engine's validation autocast), it does not force fp32
    precision = contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)

    def logits(window: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if offsets is None else {"offsets": offsets.to(device)}
        if regions is not None:  # the region map rides along as the last channel
            window, kwargs["regions"] = window[:, :-1], window[:, -1:].round().long()
        with precision:
            return model(window, **kwargs).float()

    x = image[None].float()  # [1, C, X, Y, Z]
    if regions is not None:
        if regions.shape != (1, *image.shape[1:]):
            raise ValueError(f"regions must be [1, {', '.join(map(str, image.shape[1:]))}], got {list(regions.shape)}")
        x = torch.cat([x, regions[None].to(x.device, x.dtype)], dim=1)  # [1, C + 1, X, Y, Z]
    if sw_batch_size == "auto":
        window = x.new_zeros(1, x.shape[1], *roi_size)
        sw_batch_size = auto_sw_batch_size(lambda: activation(logits(window.to(device))), device)
    flips = flip_subsets(tta_axes)
    if declared.lattice is None:
        box, blended = blend_box(x, logits, channels=image.shape[0], roi_size=roi_size, overlap=overlap,
                                 sw_batch_size=sw_batch_size, flips=flips, device=device)
        out = torch.zeros(blended.shape[0], *x.shape[2:])
        if not multilabel:
            out.unflatten(0, (units, -1))[:, 0] = 1.0  # outside the non-zero box: background, as nnU-Net writes it
        out[(slice(None), *box)] = activation(blended[None])[0]
        return out
    centre = brain_centre(brain_mask(image.cpu().numpy())) if centre is None else centre
    return blend_lattice(x, lambda w, o: activation(logits(w, o)), lattice=declared.lattice,
                         offsets=declared.offsets, centre=[float(c) for c in centre], roi_size=roi_size,
                         overlap=overlap, sw_batch_size=sw_batch_size, flips=flips, device=device)


def blend_lattice(x: torch.Tensor, probabilities: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], *,
                  lattice: tuple[int, tuple[int, int, int]], offsets: bool, centre: Sequence[float],
                  roi_size: Sequence[int], overlap: float, sw_batch_size: int, flips: Sequence[tuple[int, ...]],
                  device: torch.device) -> torch.Tensor:
    """MONAI's Gaussian sliding window over x [1, C', X, Y, Z] for a lattice network (``lattice``: its patch and
    reference grid): each pass padded so that the windows start on the brain frame's patch lattice around
    ``centre`` (``overlap`` rounded to whole patches), ``probabilities(window, offsets)`` given each window's
    patch offset [B, 3] from the reference grid when the network reads ``offsets`` (else None), the passes over
    ``flips`` flipped back and averaged. Returns [K, X, Y, Z] float32 on the CPU."""
    patch, grid = lattice
    shape = x.shape[2:]
    box = reference_origin(centre, grid)  # the reference grid's origin in the unflipped image
    total = None
    for flip in flips:
        dims = [a + 2 for a in flip]
        # the flipped pass's lattice is the mirror image of the unflipped one, so every voxel keeps
        # its patch, position code and SACA partner (not a lattice recomputed from the flipped centre)
        xi, before, origin = pad_to_lattice(x.flip(dims) if dims else x, mirrored_origin(box, shape, grid, flip),
                                            patch=patch, min_size=roi_size)

        def predictor(window: torch.Tensor, coords: list | None = None) -> torch.Tensor:  # run within this pass
            if coords is None:
                return probabilities(window, None)
            starts = torch.tensor([[s.start for s in c[2:]] for c in coords], dtype=torch.int64)  # [B, 3]
            rel = starts - torch.as_tensor(origin)
            if (rel % patch).any():
                raise RuntimeError(f"sliding window starts {starts.tolist()} are off the patch lattice "
                                   f"(reference origin {origin.tolist()}, patch {patch})")
            return probabilities(window, rel // patch)

        probs = sliding_window_inference(
            xi, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=predictor,
            overlap=lattice_overlap(roi_size, overlap, patch), mode="gaussian", sw_device=device, device="cpu",
            with_coord=offsets,
        )
        probs = probs[(..., *(slice(int(b), int(b) + n) for b, n in zip(before, shape)))]
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return (total / len(flips))[0].float()


def blend_box(x: torch.Tensor, logits: Callable[[torch.Tensor], torch.Tensor], *, channels: int,
              roi_size: Sequence[int], overlap: float, sw_batch_size: int, flips: Sequence[tuple[int, ...]],
              device: torch.device) -> tuple[tuple[slice, slice, slice], torch.Tensor]:
    """nnU-Net's sliding window over x [1, C', X, Y, Z] (its first ``channels`` the image, any others riding
    along): the box of the image's non-zero voxels (`nonzero_box`), padded with 0 to at least ``roi_size``
    (half before, half after), windows at `nnunet_starts`, each window's ``logits`` averaged over the flips
    (flipped back) and weighted by a Gaussian of σ = roi / 8. Returns the box and the blended logits
    [K, *box] (float32, CPU)."""
    box = nonzero_box(x[0, :channels])
    crop = x[(slice(None), slice(None), *box)]
    shape = crop.shape[2:]
    below = [max(0, r - n) // 2 for r, n in zip(roi_size, shape)]
    widths = [w for r, n, b in reversed(list(zip(roi_size, shape, below))) for w in (b, max(0, r - n) - b)]
    crop = torch.nn.functional.pad(crop, widths)
    size = crop.shape[2:]
    weight = compute_importance_map(tuple(roi_size), mode="gaussian", sigma_scale=0.125, device="cpu")
    starts = list(itertools.product(*(nnunet_starts(n, r, overlap) for n, r in zip(size, roi_size))))
    total, norm = None, torch.zeros(size)
    for first in range(0, len(starts), sw_batch_size):
        group = [tuple(slice(s, s + r) for s, r in zip(start, roi_size)) for start in starts[first:first + sw_batch_size]]
        windows = torch.cat([crop[(..., *where)] for where in group]).to(device)
        pred = sum(logits(windows.flip([a + 2 for a in flip])).flip([a + 2 for a in flip]) for flip in flips)
        pred = (pred / len(flips)).cpu()
        if total is None:
            total = torch.zeros(pred.shape[1], *size)
        for where, one in zip(group, pred):
            total[(slice(None), *where)] += one * weight
            norm[where] += weight
    inside = (slice(None), *(slice(b, b + n) for b, n in zip(below, shape)))
    return box, (total / norm)[inside]

