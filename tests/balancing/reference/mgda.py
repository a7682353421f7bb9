"""Test-only reference: the solver of ``mtvision.balancing.mgda`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
MAX_ITER = 250  # MinNormSolver.MAX_ITER in the authors' code
# A line-search denominator ||d - g_t||^2 below this fraction of the largest ||g_i||^2 means
# d = g_t already: the step is 0 (no division by ~0).
REL_EPS = 1e-12


def _normalizers(gram: Tensor, losses: Tensor | None, normalization: str) -> Tensor:
    """The float64 [T] divisors of the task gradients for ``normalization``."""
    T = gram.shape[0]
    one = torch.ones(T, dtype=gram.dtype, device=gram.device)
    if normalization == "none":
        return one
    norms = gram.diagonal().clamp_min(0).sqrt()
    if normalization == "l2":
        n = norms
    else:
        if losses is None:
            raise ValueError(f"normalization '{normalization}' needs the task losses")
        L = losses.detach().to(gram.dtype).reshape(T).abs()
        n = L if normalization == "loss" else L * norms
    return torch.where(n > 0, n, one)


def min_norm_weights(gram: Tensor, max_iter: int = MAX_ITER) -> Tensor:
    """The min-norm point's weights (float64 [T], on the simplex) for a float64 Gram matrix."""
    T = gram.shape[0]
    dev, dt = gram.device, gram.dtype
    diag = gram.diagonal()
    eps = REL_EPS * diag.max().clamp_min(0)
    if T == 1:
        return torch.ones(1, dtype=dt, device=dev)
    if T == 2:
        den = diag[0] - 2 * gram[0, 1] + diag[1]  # ||g1 - g2||^2
        gamma = torch.where(den > eps, (diag[1] - gram[0, 1]) / den.clamp_min(1e-300),
                            torch.full((), 0.5, dtype=dt, device=dev)).clamp(0.0, 1.0)
        return torch.stack([gamma, 1 - gamma])
    w = torch.full((T,), 1.0 / T, dtype=dt, device=dev)
    idx = torch.arange(T, device=dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    for _ in range(max_iter):
        Mw = gram @ w
        t = Mw.argmin()
        vertex = (idx == t).to(dt)
        dd = w @ Mw             # ||d||^2
        dg = (Mw * vertex).sum()  # d . g_t
        gg = (diag * vertex).sum()  # ||g_t||^2
        den = dd - 2 * dg + gg  # ||d - g_t||^2
        # Algorithm 1 on the pair (d, g_t): the weight of g_t.
        gamma = torch.where(den > eps, (dd - dg) / den.clamp_min(1e-300), zero).clamp(0.0, 1.0)
        w = w + gamma * (vertex - w)
    return w


def mgda_weights(gram: Tensor, losses: Tensor | None = None, normalization: str = "none",
                 max_iter: int = MAX_ITER) -> Tensor:
    """MGDA's weights float32[T] (summing to 1) from the Gram matrix ``G G^T``; ``losses``
    [T] only for the ``"loss"`` and ``"loss+"`` normalizations."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                         f"{normalization!r}")
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    n = _normalizers(M, losses, normalization)
    return min_norm_weights(M / (n[:, None] * n[None, :]), max_iter).float()
