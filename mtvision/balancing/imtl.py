"""IMTL-G: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang, "Towards
Impartial Multi-task Learning", ICLR 2021 (the gradient balancing part, Section 3.2).

The update ``g = sum_i a_i g_i`` (``sum_i a_i = 1``) has equal projections onto every unit task
gradient ``u_i = g_i / ||g_i||``. The paper's closed form ``a_{2..T} = g_1 U^T (D U^T)^-1``
(``D`` rows ``g_1 - g_t``, ``U`` rows ``u_1 - u_t``, ``a_1 = 1 - sum``) is the solution of the
linear system, in the Gram matrix ``M`` alone::

    (M a)_t / ||g_t|| = s   for every task t,      sum_t a_t = 1

with unknowns ``a`` and the common projection ``s``; this form needs no reference task, so a
task whose gradient is 0 simply drops out (``a_t = 0``, no constraint on it). The weights sum
to 1 (the paper's scale). The small system is solved by LU; where that fails or is inaccurate
(parallel gradients make it singular) a Tikhonov-regularised least-squares solution is used
instead. That choice is a decision on the numbers: it is made on the host, in float64 NumPy,
after ONE device-to-host copy of the ``T x T`` matrix (``host.fetch``: the one sync of the
solve), where computing both solutions on the device and selecting there cost ~250 launches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.registry import BALANCERS

REL_ZERO = 1e-12  # ||g_t||^2 below this fraction of the largest: a zero gradient
TIKHONOV = 1e-12  # of the squared system's largest diagonal entry
RESIDUAL = 1e-8   # relative residual above which the LU solution is rejected


@register_aggregator("imtl_g")
def imtl_g_weights(gram: Tensor) -> Tensor:
    """IMTL-G's weights float32[T] (summing to 1) from the Gram matrix ``G G^T``."""
    (M,) = fetch(gram)
    T = M.shape[0]
    sq = np.diagonal(M)
    active = sq > REL_ZERO * max(sq.max(), 0.0)
    norms = np.sqrt(np.clip(sq, 0, None))
    # Both unknown blocks are O(1): projections in units of the mean gradient norm.
    unit = (norms * active).sum() / max(active.sum(), 1)
    unit = unit if unit > 0 else 1.0
    K = np.where(active[None, :], M / np.where(active, norms, 1.0)[None, :], 0.0) / unit
    # Row t: sum_i a_i K[i, t] - s = 0 (active t) or a_t = 0; last row: sum_i a_i = 1.
    A = np.zeros((T + 1, T + 1))
    A[:T] = np.where(active[:, None], np.hstack([K.T, -np.ones((T, 1))]),
                     np.hstack([np.eye(T), np.zeros((T, 1))]))
    A[T, :T] = 1.0
    rhs = np.zeros(T + 1)
    rhs[T] = 1.0
    with np.errstate(all="ignore"):
        try:
            x = np.linalg.solve(A, rhs)
            ok = bool(np.all(np.isfinite(x))) and np.linalg.norm(A @ x - rhs) <= RESIDUAL
        except np.linalg.LinAlgError:  # exactly singular
            ok = False
        if not ok:
            AtA = A.T @ A
            reg = TIKHONOV * AtA.diagonal().max() * np.eye(T + 1)
            x = np.linalg.solve(AtA + reg, A.T @ rhs)
    return upload(np.where(np.isfinite(x[:T]), x[:T], 0.0), gram)


@BALANCERS.register("imtl_g")
class IMTLG(GradientBalancer):
    """IMTL-G (see the module docstring); no options besides ``mode``."""

    def __init__(self, tasks: Sequence[str], mode: str = "param") -> None:
        super().__init__(tasks, mode)

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return imtl_g_weights(gram)
