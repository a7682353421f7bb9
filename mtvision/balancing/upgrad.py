"""UPGrad: P. Quinton, V. Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, 2024.

Each task gradient is projected onto the dual cone of the rows ``{x : G x >= 0}`` and the
projections are averaged (weighted by the preference vector ``p``, ``1/T`` each by default).
The projection of ``p_i g_i`` is ``G^T v_i`` with::

    v_i = argmin_{v >= p_i e_i} v^T M v          (M = G G^T)

(Lagrangian of ``min ||x - p_i g_i||^2 s.t. G x >= 0``: ``x = G^T (p_i e_i + mu)``, ``mu >= 0``
minimising ``mu^T M mu + 2 p_i e_i^T M mu``, i.e. the above with ``v = p_i e_i + mu``), and the
weights are ``w = sum_i v_i``; ``M w >= 0``: the update conflicts with no task.

As in the torchjd library: ``M`` is divided by its trace and ``reg_eps`` (1e-4) is added to its
diagonal, which keeps the problems strictly convex (the dual-cone property then holds up to
``reg_eps``-sized terms); torchjd's absolute threshold that zeroes a Gram matrix of trace below
1e-4 is dropped (it depends on the loss scale), only a zero trace is guarded. torchjd solves the
T problems with quadprog on the CPU; here too they are solved exactly on the host, after ONE
device-to-host copy of the ``T x T`` matrix (``host.fetch``: the one sync of the solve; a
batched iteration on the device cost thousands of kernel launches): with the Cholesky factor
``Q = R^T R`` and ``v = p_i e_i + u``, each is the non-negative least squares problem
``min_{u >= 0} ||R u + R p_i e_i||^2``, which SciPy's NNLS (Lawson-Hanson, finite) solves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.optimize
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.registry import BALANCERS, ConfigError

REG_EPS = 1e-4


def project_dual_cone(Q: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The rows ``v_i = argmin_{v >= lower_i} v^T Q v`` (float64 [B, T]) for a positive
    definite float64 ``Q`` [T, T] and bounds ``lower`` [B, T]."""
    R = np.linalg.cholesky(Q).T  # Q = R^T R
    return np.stack([low + scipy.optimize.nnls(R, -(R @ low))[0] for low in lower])


@register_aggregator("upgrad")
def upgrad_weights(gram: Tensor, pref: Tensor | None = None, reg_eps: float = REG_EPS) -> Tensor:
    """UPGrad's weights float32[T] from the Gram matrix ``G G^T`` and the preference vector
    ``pref`` [T] (non-negative; ``1/T`` each when None)."""
    if pref is None:
        (M,) = fetch(gram)
        p = np.full(M.shape[0], 1.0 / M.shape[0])
    else:
        M, p = fetch(gram, pref)
    T = M.shape[0]
    trace = np.trace(M)
    Q = M / (trace if trace > 0 else 1.0) + reg_eps * np.eye(T)
    return upload(project_dual_cone(Q, np.diag(p)).sum(0), gram)


@BALANCERS.register("upgrad")
class UPGrad(GradientBalancer):
    """UPGrad with the mean preference (see the module docstring). Options: ``reg_eps``,
    """

    def __init__(self, tasks: Sequence[str], mode: str = "param",
                 reg_eps: float = REG_EPS) -> None:
        super().__init__(tasks, mode)
        if isinstance(reg_eps, bool) or not isinstance(reg_eps, (int, float)) \
                or not math.isfinite(reg_eps) or reg_eps <= 0:
            raise ConfigError(f"balancer.reg_eps must be a positive number, got {reg_eps!r}")
        self.reg_eps = float(reg_eps)

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return upgrad_weights(gram, None, self.reg_eps)
