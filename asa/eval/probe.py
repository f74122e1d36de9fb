"""Frozen-encoder probes: how much tissue information the pretrained tokens carry.

A probe set is a few labeled volumes preprocessed exactly as pretraining crops (z-scored in brain,
brain-centred crop of the pretraining size). Every encoder token is then paired with its patch's
class fractions. Two probes read the frozen tokens of the brain patches, fitted on half of the
cases and scored on the other half:

- ridge: per-patch class fractions regressed from the standardised tokens (scikit-learn's ``Ridge``),
  ``W = (XᵀX + λI)⁻¹ XᵀY``; R² per class on the held-out patches (``probe/r2_<class>``, ``probe/r2_mean``);
- k-NN: each held-out patch takes the majority class of its k nearest fitted patches (cosine
  similarity); accuracy ``probe/knn_acc``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import Ridge
from torch import nn

from asa.data.geometry import brain_centre, crop_or_pad
from asa.data.preprocessing import brain_mask, case_to_item, load_case_images, normalize_in_brain
from asa.data.regions import RegionSource
from asa.io import load_volume
from asa.models import patch_regions, unwrap

__all__ = ["ProbeSet", "build_probe_set", "encode_tokens", "knn_accuracy", "knn_neighbours", "knn_votes",
           "make_probe", "patch_fractions", "probe_metrics", "r2_columns", "ridge_predict", "ridge_r2", "standardize"]


def standardize(x_fit: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Features standardised with the mean and standard deviation (unbiased, floored at 1e-8) of the
    fitted rows ``x_fit`` [n, D]: (x_fit, *others) rescaled alike."""
    mu, sd = x_fit.mean(0), x_fit.std(0).clamp_min(1e-8)
    return tuple((t - mu) / sd for t in (x_fit, *others))


def ridge_predict(x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, *, lam: float = 1.0) -> torch.Tensor:
    """Ridge regression of y on x (scikit-learn's ``Ridge(alpha=lam)``: ``W = (AᵀA + λI)⁻¹ Aᵀ(Y − ȳ)``
    with A the features standardised on the fitted rows and an unpenalised intercept ȳ); predictions
    on the test rows (float64). x_fit [n, D], y_fit [n, K], x_test [m, D] -> [m, K]."""
    a, b = (t.cpu().numpy() for t in standardize(x_fit.double(), x_test.double()))
    y = y_fit.double().cpu().numpy()
    return torch.from_numpy(Ridge(alpha=lam).fit(a, y).predict(b).reshape(b.shape[0], y.shape[1]))


def r2_columns(y_true: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """R² per column of y_true [m, K] against pred [m, K] (``1 − SSE/SST`` about the truth's own
    mean); NaN where the truth column is constant. -> [K] float32."""
    y_true, pred = y_true.double(), pred.double()
    sse = ((y_true - pred) ** 2).sum(0)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return torch.where(sst > 1e-12, 1 - sse / sst.clamp_min(1e-12), torch.full_like(sst, float("nan"))).float()


def ridge_r2(x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
             lam: float = 1.0) -> torch.Tensor:
    """Closed-form ridge regression of y on x (`ridge_predict`); R² per target column on the test
    rows, NaN where the test column is constant.

    x_fit [n, D], y_fit [n, K], x_test [m, D], y_test [m, K] -> [K].
    """
    return r2_columns(y_test, ridge_predict(x_fit, y_fit, x_test, lam=lam))


def knn_votes(x_fit: torch.Tensor, c_fit: torch.Tensor, x_test: torch.Tensor, *, k: int = 5,
              num_classes: int | None = None, chunk: int = 4096) -> torch.Tensor:
    """Votes of the k most cosine-similar fitted rows (features standardised on the fitted rows)
    for each test row: x_fit [n, D], c_fit [n] int64, x_test [m, D] -> counts [m, K] (K =
    ``num_classes`` or one more than the largest fitted class); test rows go ``chunk`` at a time."""
    a, b = standardize(x_fit.float(), x_test.float())
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    k = min(k, a.shape[0])
    classes = int(c_fit.max()) + 1 if num_classes is None else int(num_classes)
    out = []
    for i in range(0, b.shape[0], chunk):
        nearest = (b[i:i + chunk] @ a.T).topk(k, dim=1).indices  # [chunk, k]
        out.append(torch.nn.functional.one_hot(c_fit[nearest], classes).sum(1))
    return torch.cat(out) if out else torch.zeros(0, classes, dtype=torch.long)


def knn_neighbours(x_fit: torch.Tensor, x_test: torch.Tensor, *, k: int = 5) -> torch.Tensor:
    """Indices [m, k] of the k most cosine-similar fitted rows of each test row (standardised as
    in `knn_votes`)."""
    a, b = standardize(x_fit.float(), x_test.float())
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    return (b @ a.T).topk(min(k, a.shape[0]), dim=1).indices


def knn_accuracy(x_fit: torch.Tensor, c_fit: torch.Tensor, x_test: torch.Tensor, c_test: torch.Tensor, *,
                 k: int = 5) -> float:
    """Share of test rows whose majority class among the k most cosine-similar fitted rows (features
    standardised on the fitted rows, `knn_votes`) is their own class. x [n, D], c [n] int64."""
    votes = knn_votes(x_fit, c_fit, x_test, k=k, num_classes=int(max(c_fit.max(), c_test.max())) + 1)
    return float((votes.argmax(1) == c_test).float().mean())


def patch_fractions(onehot: torch.Tensor, patch_size: int) -> torch.Tensor:
    """onehot [K, X, Y, Z] (0/1 per class) -> class fractions per patch [N, K] in raster order (axis 2 fastest)."""
    k = onehot.shape[0]
    pooled = torch.nn.functional.avg_pool3d(onehot[None].float(), patch_size)  # [1, K, G0, G1, G2]
    return pooled.reshape(k, -1).T


@torch.no_grad()
def encode_tokens(model: nn.Module, x: torch.Tensor, patch_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Encoder output over all tokens (no masking) of an ASA model: x [B, C, D, H, W] -> [B, N, embed_dim].
    patch_ids: [B, N] region of every patch, for an encoder with region attention."""
    model = unwrap(model)
    n = model.num_patches
    ids = torch.arange(n, device=x.device).expand(x.shape[0], n)
    return model.forward_encoder(x, ids, patch_ids).float()


@dataclass
class ProbeSet:
    """images [n, C, *size]; fractions [n, N, K] per patch; classes [n, N] (majority class); brain [n, N] bool."""

    images: torch.Tensor
    fractions: torch.Tensor
    classes: torch.Tensor
    brain: torch.Tensor
    names: tuple[str, ...]  # one per column of fractions
    regions: torch.Tensor | None = None  # [n, N] patch regions (encoders with region attention)


def build_probe_set(cases: Sequence, task, *, size: int, channels: Sequence[str], patch_size: int = 8,
                    regions: RegionSource | None = None) -> ProbeSet:
    """Preprocess labeled cases as pretraining crops (docs/method.md §1.1) with their labels cropped alike.

    Softmax tasks: one column per non-background class; multilabel tasks: one per region. The
    majority class of a patch (0 = background / no region) is its k-NN label. ``channels`` are the
    pretraining channels, which the task must have. ``regions``: the run's region source, for an
    encoder with region attention (patch majority of each case's region map); a source made from the
    labels is refused (the probe would read the target through the encoder's input).
    """
    if len(cases) < 2:
        raise ValueError(f"probe set: {len(cases)} labeled case(s); the probe fits on half and scores on the "
                         "other half, so it needs at least 2")
    missing = [c for c in channels if c not in task.channels]
    if missing:
        raise ValueError(f"probe set: the {task.name} task has channels {list(task.channels)}, not the "
                         f"pretraining channels {missing}")
    if regions is not None:
        regions.check_network_input("the probed encoder's region attention")
    images, fractions, classes, brains, region_ids = [], [], [], [], []
    shape = (size,) * 3
    for case in cases:
        item = case_to_item(case, channels)
        image, _ = load_case_images(item)
        mask = brain_mask(image)
        centre = brain_centre(mask)
        normalized = normalize_in_brain(image, mask)
        image = crop_or_pad(normalized, centre, shape)
        if regions is not None:
            region = crop_or_pad(regions(item, normalized, mask)[None].astype(np.int64), centre, shape)
            region_ids.append(patch_regions(torch.from_numpy(region), patch_size)[0])
        raw = load_volume(item["label"], label=True).array.astype(np.int64)
        if raw.shape != mask.shape:
            raise ValueError(f"probe set: label {item['label']} is not on the grid of case {case.id}'s image")
        raw = crop_or_pad(raw[None], centre, shape)[0]
        if task.multilabel:
            onehot = np.stack([np.isin(raw, r) for r in task.regions])
        else:
            target = task.label_to_target(raw)
            onehot = np.stack([target == i for i in range(1, task.num_outputs)])
        frac = patch_fractions(torch.from_numpy(onehot), patch_size)
        background = (1 - frac.sum(1, keepdim=True)).clamp_min(0)
        images.append(torch.from_numpy(np.ascontiguousarray(image)))
        fractions.append(frac)
        classes.append(torch.cat([background, frac], 1).argmax(1))
        brain = crop_or_pad(mask[None].astype(np.float32), centre, shape)
        brains.append(patch_fractions(torch.from_numpy(brain), patch_size)[:, 0] > 0)
    return ProbeSet(torch.stack(images), torch.stack(fractions), torch.stack(classes), torch.stack(brains),
                    tuple(task.output_names), torch.stack(region_ids) if region_ids else None)


def probe_metrics(tokens: torch.Tensor, probe: ProbeSet, *, lam: float = 1.0, k: int = 5) -> dict[str, float]:
    """tokens [n, N, D] of the probe images -> {"probe/r2_<name>", "probe/r2_mean", "probe/knn_acc"}.
    Even-numbered cases are fitted, odd-numbered ones scored; only brain patches take part."""
    fit = torch.zeros(tokens.shape[0], dtype=torch.bool)
    fit[::2] = True

    def rows(which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep = probe.brain[which]
        return tokens[which][keep].cpu(), probe.fractions[which][keep], probe.classes[which][keep]

    xf, yf, cf = rows(fit)
    xt, yt, ct = rows(~fit)
    r2 = ridge_r2(xf, yf, xt, yt, lam=lam)
    out = {f"probe/r2_{name}": float(v) for name, v in zip(probe.names, r2)}
    finite = r2[torch.isfinite(r2)]
    out["probe/r2_mean"] = float(finite.mean()) if finite.numel() else float("nan")
    out["probe/knn_acc"] = knn_accuracy(xf, cf, xt, ct, k=k)
    return out


TokensFn = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def make_probe(probe: ProbeSet, *, lam: float = 1.0, k: int = 5, batch_size: int = 2,
               tokens_of: TokensFn = encode_tokens) -> Callable[[nn.Module], dict[str, float]]:
    """probe(model) -> probe metrics of a model's frozen encoder on ``probe`` (no gradients).
    ``tokens_of(model, x, patch_regions)``: the encoder's tokens [B, N, C] on the probe's patch grid
    (default: an ASA encoder's, `encode_tokens`; a pretraining method gives its own)."""

    @torch.no_grad()
    def run(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        tokens = torch.cat([
            tokens_of(model, probe.images[i:i + batch_size].to(device),
                      None if probe.regions is None else probe.regions[i:i + batch_size].to(device)).float()
            for i in range(0, probe.images.shape[0], batch_size)
        ])
        return probe_metrics(tokens, probe, lam=lam, k=k)

    return run
