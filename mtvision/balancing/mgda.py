"""MGDA: O. Sener, V. Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
2018.

The update is the min-norm point of the convex hull of the task gradients::

    w = argmin_{w in simplex} || sum_i w_i g_i ||^2 = argmin_{w in simplex} w^T (G G^T) w

solved on the Gram matrix with the paper's Algorithm 2 (Frank-Wolfe from the uniform point, the
vertex ``t = argmin_r (M w)_r`` and the exact line search of Algorithm 1 between ``w`` and
``e_t``) for a fixed ``max_iter`` iterations (250, ``MinNormSolver.MAX_ITER`` of the authors'
code; their early stop on a small change is dropped, so nothing is read back to the host); for
two tasks the closed form ``gamma = clip((g2 - g1).g2 / ||g1 - g2||^2, 0, 1)``. Algorithm 1's
exact clip to [0, 1] is used where the authors' code returns 0.999 / 0.001 at the ends.

``normalization`` (their ``gradient_normalizers``): the gradients are divided by ``||g_i||``
(``"l2"``), ``L_i`` (``"loss"``) or ``L_i ||g_i||`` (``"loss+"``) before solving, i.e. the Gram
matrix becomes ``D^-1 M D^-1``; as in their training loop the resulting weights (summing to 1)
are applied to the unnormalised gradients. A zero normaliser (zero gradient or loss) is
replaced by 1 and a negative loss by its absolute value, so nothing divides by 0.

``"mgda_ub"`` is the same method with default mode ``"feature"``: MGDA-UB, the upper bound of
the paper's Section 3.3 that solves on the gradients of the shared representation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError

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


@register_aggregator("mgda")
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


@BALANCERS.register("mgda")
class MGDA(GradientBalancer):
    """MGDA (see the module docstring). Options: ``normalization`` ("none", "l2", "loss",
    "loss+"), ``max_iter`` (Frank-Wolfe iterations, for three tasks or more)."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", normalization: str = "none",
                 max_iter: int = MAX_ITER) -> None:
        super().__init__(tasks, mode)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"balancer.normalization must be one of "
                              f"{', '.join(NORMALIZATIONS)}, got {normalization!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError(f"balancer.max_iter must be a positive integer, got {max_iter!r}")
        self.normalization = normalization
        self.max_iter = max_iter

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return mgda_weights(gram, losses, self.normalization, self.max_iter)


@BALANCERS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared features (default mode ``"feature"``)."""

    def __init__(self, tasks: Sequence[str], mode: str = "feature", normalization: str = "none",
                 max_iter: int = MAX_ITER) -> None:
        super().__init__(tasks, mode, normalization, max_iter)
