"""CAGrad: B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021.

With the mean gradient ``g0`` and ``sqrt(phi) = c ||g0||``::

    d = g0 + (sqrt(phi) / ||g_w||) g_w,   g_w = sum_i x_i g_i,
    x = argmin_{x in simplex} g_w . g0 + sqrt(phi) ||g_w||

all in the Gram matrix ``M`` (``g_w . g0 = x^T M 1/T``, ``||g_w||^2 = x^T M x``), so
``d = w^T G`` with ``w = 1/T + (sqrt(phi) / ||g_w||) x``. ``rescale`` as in the official code:
0 keeps ``d``, 1 divides it by ``1 + c^2`` (the official default), 2 by ``1 + c``.

The official code solves the dual with scipy's SLSQP on the CPU. Here: at most ``iters`` (50)
projected-gradient steps on the simplex from the uniform point, each step trying 24 step sizes
``4 / max_i ||g_i||^2 * 2^-k`` (and 0) at once and keeping the best, which makes the descent
monotone and indifferent to the problem's scale and conditioning. The steps run on the host in
float64 NumPy after ONE device-to-host copy of the ``T x T`` matrix (``host.fetch``: the one
sync of the solve; on the device every step was ~100 kernel launches), and stop early once no
step size improves (the point is then fixed: the remaining steps would not move it).
The solver's objective smooths the norm as ``sqrt(||g_w||^2 + 1e-12 max_i ||g_i||^2)``; the
official absolute ``1e-8`` terms are dropped (a zero ``g_w`` gives a zero correction instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.registry import BALANCERS, ConfigError

ITERS = 50
STEP_SIZES = 24
SMOOTH = 1e-12
RESCALES = (0, 1, 2)


def project_simplex(Y: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``Y`` [..., T] onto the probability simplex (sort
    based: Held, Wolfe & Crowder 1974; Duchi et al. 2008)."""
    T = Y.shape[-1]
    U = -np.sort(-Y, axis=-1)
    css = np.cumsum(U, axis=-1) - 1
    k = np.arange(1, T + 1, dtype=Y.dtype)
    # The condition holds on a prefix: its last index is the argmax of cond * k.
    rho = np.argmax((U - css / k > 0) * k, axis=-1)[..., None]
    theta = np.take_along_axis(css, rho, axis=-1) / (rho + 1)
    return np.clip(Y - theta, 0, None)


def _dual(X: np.ndarray, M: np.ndarray, Mb: np.ndarray, r: float, eps: float) -> np.ndarray:
    """The dual objective ``x^T M b + r sqrt(x^T M x + eps)`` of each row of ``X``."""
    return X @ Mb + r * np.sqrt(np.einsum("ij,ij->i", X @ M, X) + eps)


def solve_dual(M: np.ndarray, r: float, iters: int = ITERS) -> np.ndarray:
    """The minimiser x (float64 [T]) of the CAGrad dual for a float64 Gram matrix and radius
    ``r = sqrt(phi)`` (see the module docstring)."""
    T = M.shape[0]
    b = np.full(T, 1.0 / T)
    Mb = M @ b
    scale = max(np.diagonal(M).max(), 1e-300)
    eps = SMOOTH * scale
    etas = (4.0 / scale * 2.0 ** -np.arange(STEP_SIZES))[:, None]
    x = b
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(iters):
            Mx = M @ x
            grad = Mb + r * Mx / np.sqrt(x @ Mx + eps)
            cand = np.concatenate([x[None], project_simplex(x[None] - etas * grad[None])])
            f = _dual(cand, M, Mb, r, eps)
            best = int(np.argmin(np.where(np.isfinite(f), f, np.inf)))
            if best == 0:  # no step improves: x is a fixed point of the iteration
                break
            x = cand[best]
    return x


@register_aggregator("cagrad")
def cagrad_weights(gram: Tensor, c: float = 0.4, rescale: int = 1, iters: int = ITERS) -> Tensor:
    """CAGrad's weights float32[T] from the Gram matrix ``G G^T``."""
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
    (M,) = fetch(gram)
    T = M.shape[0]
    b = np.full(T, 1.0 / T)
    r = c * math.sqrt(max(M.mean(), 0.0))  # ||g0||^2 = 1^T M 1 / T^2
    x = solve_dual(M, r, iters) if c > 0 else b
    gw = math.sqrt(max(x @ M @ x, 0.0))
    lam = r / gw if gw > 0 else 0.0
    w = b + lam * x
    divisor = (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    return upload(w / divisor, gram)


@BALANCERS.register("cagrad")
class CAGrad(GradientBalancer):
    """CAGrad (see the module docstring). Options: ``c`` (the radius relative to ``||g0||``,
    0.4), ``rescale`` (0, 1, 2), ``iters`` (solver steps)."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", c: float = 0.4,
                 rescale: int = 1, iters: int = ITERS) -> None:
        super().__init__(tasks, mode)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                or c < 0:
            raise ConfigError(f"balancer.c must be a non-negative number, got {c!r}")
        if isinstance(rescale, bool) or rescale not in RESCALES:
            raise ConfigError(f"balancer.rescale must be 0, 1 or 2, got {rescale!r}")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ConfigError(f"balancer.iters must be a positive integer, got {iters!r}")
        self.c = float(c)
        self.rescale = rescale
        self.iters = iters

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return cagrad_weights(gram, self.c, self.rescale, self.iters)
