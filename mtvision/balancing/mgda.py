"""MGDA: O. Sener, V. Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
2018.

The update is the min-norm point of the convex hull of the task gradients::

    w = argmin_{w in simplex} || sum_i w_i g_i ||^2 = argmin_{w in simplex} w^T (G G^T) w

solved on the Gram matrix. The authors' Algorithm 2 (Frank-Wolfe, 250 iterations) converges
slowly when the optimum lies inside a face; here the problem is solved exactly, on the host
after ONE device-to-host copy of the ``T x T`` matrix (``host.fetch``, the step's one sync;
a few hundred bytes), since an exact solve needs decisions on the numbers: with ``M = R^T R``
the non-negative least squares problem::

    u = argmin_{u >= 0} ||R u||^2 + (1^T u - 1)^2,        w = u / (1^T u)

has the min-norm point's optimality conditions as its own (``g_i . d >= ||d||^2``, with
equality where ``w_i > 0``), so SciPy's NNLS (Lawson-Hanson, finite) solves it; the result is
then polished by the exact equality-constrained solve on its support. For two tasks the closed
form ``gamma = clip((g2 - g1).g2 / ||g1 - g2||^2, 0, 1)`` of Algorithm 1.

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

import numpy as np
import scipy.optimize
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.registry import BALANCERS, ConfigError

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
# A line-search denominator ||d - g_t||^2 below this fraction of the largest ||g_i||^2 means
# d = g_t already: the step is 0 (no division by ~0).
REL_EPS = 1e-12


def _normalizers(M: np.ndarray, losses: np.ndarray | None, normalization: str) -> np.ndarray:
    """The float64 [T] divisors of the task gradients for ``normalization``."""
    T = M.shape[0]
    if normalization == "none":
        return np.ones(T)
    norms = np.sqrt(np.clip(np.diagonal(M), 0, None))
    if normalization == "l2":
        n = norms
    else:
        L = np.abs(losses)
        n = L if normalization == "loss" else L * norms
    return np.where(n > 0, n, 1.0)


def min_norm_weights(M: np.ndarray) -> np.ndarray:
    """The min-norm point's weights (float64 [T], on the simplex) for a float64 Gram matrix."""
    T = M.shape[0]
    diag = np.diagonal(M)
    eps = REL_EPS * max(diag.max(), 0.0)
    if T == 1:
        return np.ones(1)
    if T == 2:
        den = diag[0] - 2 * M[0, 1] + diag[1]  # ||g1 - g2||^2
        gamma = float(np.clip((diag[1] - M[0, 1]) / den, 0.0, 1.0)) if den > eps else 0.5
        return np.array([gamma, 1 - gamma])
    if not diag.max() > 0:
        return np.full(T, 1.0 / T)  # every gradient is 0: any point is the min-norm point
    lam, V = np.linalg.eigh(M)
    R = np.sqrt(np.clip(lam, 0, None))[:, None] * V.T  # R^T R = M
    A = np.vstack([R, np.ones((1, T))])
    b = np.zeros(T + 1)
    b[T] = 1.0
    u = scipy.optimize.nnls(A, b)[0]
    w = u / u.sum() if u.sum() > 0 else np.full(T, 1.0 / T)
    # Polish: the exact minimiser on the affine hull of the support, kept when feasible and
    # not worse (the NNLS solution is only as exact as its stopping tolerance).
    S = np.flatnonzero(w > 0)
    K = np.zeros((S.size + 1, S.size + 1))
    K[:S.size, :S.size] = M[np.ix_(S, S)]
    K[:S.size, S.size] = K[S.size, :S.size] = 1.0
    rhs = np.zeros(S.size + 1)
    rhs[S.size] = 1.0
    try:
        x = np.linalg.solve(K, rhs)[:S.size]
    except np.linalg.LinAlgError:  # a degenerate support: the NNLS point stands
        return w
    polished = np.zeros(T)
    polished[S] = x
    if np.all(np.isfinite(x)) and x.min() >= 0 and polished @ M @ polished <= w @ M @ w:
        return polished
    return w


@register_aggregator("mgda")
def mgda_weights(gram: Tensor, losses: Tensor | None = None, normalization: str = "none") -> Tensor:
    """MGDA's weights float32[T] (summing to 1) from the Gram matrix ``G G^T``; ``losses``
    [T] only for the ``"loss"`` and ``"loss+"`` normalizations."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                         f"{normalization!r}")
    if normalization in ("loss", "loss+") and losses is None:
        raise ValueError(f"normalization '{normalization}' needs the task losses")
    if normalization in ("loss", "loss+"):
        M, L = fetch(gram, losses)
    else:
        (M,), L = fetch(gram), None
    n = _normalizers(M, L, normalization)
    return upload(min_norm_weights(M / (n[:, None] * n[None, :])), gram)


@BALANCERS.register("mgda")
class MGDA(GradientBalancer):
    """MGDA (see the module docstring). Options: ``normalization`` ("none", "l2", "loss",
    "loss+")."""

    def __init__(self, tasks: Sequence[str], mode: str = "param",
                 normalization: str = "none") -> None:
        super().__init__(tasks, mode)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"balancer.normalization must be one of "
                              f"{', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.normalization = normalization

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return mgda_weights(gram, losses, self.normalization)


@BALANCERS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared features (default mode ``"feature"``)."""

    def __init__(self, tasks: Sequence[str], mode: str = "feature",
                 normalization: str = "none") -> None:
        super().__init__(tasks, mode, normalization)
