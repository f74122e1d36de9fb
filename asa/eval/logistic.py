"""Multinomial logistic regression with an L2 penalty, fitted by L-BFGS in torch (for linear probes).

Features are standardised on the fitted rows (`asa.eval.probe.standardize`); the fit minimises

    Σ_i CE(softmax(W x_i + b), y_i) + (λ / 2) ‖W‖²

over W [D, K] and an unpenalised intercept b [K], in float64, with torch's L-BFGS and a strong-Wolfe
line search. It is scikit-learn's ``LogisticRegression(C=1/λ)`` objective (multinomial, lbfgs) on the
same standardised features; being strictly convex for λ > 0 it has one minimum, where the gradient
``Xᵀ(P − Y) + λW`` vanishes.
"""

from __future__ import annotations

import torch

from asa.eval.probe import standardize

__all__ = ["LogisticFit", "fit_logistic", "logistic_probabilities"]


class LogisticFit:
    """A fitted model: ``weight`` [D, K], ``bias`` [K] on features standardised with ``mean`` /
    ``std`` [D]; ``gradient_norm``: the largest absolute entry of the objective's gradient at the end."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 gradient_norm: float) -> None:
        self.weight, self.bias, self.mean, self.std = weight, bias, mean, std
        self.gradient_norm = gradient_norm

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [m, K] of rows x [m, D] (float64)."""
        z = (x.double() - self.mean) / self.std
        return torch.softmax(z @ self.weight + self.bias, dim=1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, lam: float = 1.0, max_iter: int = 300,
                 tol: float = 1e-8) -> LogisticFit:
    """Fit the penalised multinomial model (module docstring) to rows x [n, D] with classes y [n]
    (int64 in [0, num_classes)); a class absent from y gets its column all the same (its
    probability is driven down by the intercept only). ``lam`` must be > 0."""
    if not lam > 0:
        raise ValueError(f"logistic regression needs an L2 penalty lam > 0, got {lam}")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_logistic: x must be [n, D] and y [n], got {list(x.shape)} and {list(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"fit_logistic: {x.shape[0]} row(s); standardising the features needs at least 2")
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    (z,) = standardize(x)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, y, reduction="sum") + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
        objective()
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    return LogisticFit(w.detach(), b.detach(), mean, std, grad)


def logistic_probabilities(x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, num_classes: int, *,
                           lam: float = 1.0, max_iter: int = 300) -> torch.Tensor:
    """Fit on (x_fit, y_fit), return the class probabilities [m, K] of x_test."""
    return fit_logistic(x_fit, y_fit, num_classes, lam=lam, max_iter=max_iter).probabilities(x_test)
