"""Nash-MTL: A. Navon, A. Shamsian, I. Achituve, H. Maron, K. Kawaguchi, G. Chechik,
E. Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022.

The bargaining solution's weights are the ``w > 0`` with::

    (G G^T) w = 1 / w        (elementwise; the update w^T G then has norm sqrt(T))

i.e. the minimiser of the strictly convex ``F(w) = w^T (G G^T) w / 2 - sum_i log w_i``. The
paper solves a sequence of convex programs with cvxpy/ECOS on the CPU (at most 20, stopped
early). Here: with ``w_i = u_i / ||g_i||`` the equation is the same on
the correlation matrix ``C`` (unit diagonal, which makes the solve independent of each task's
gradient scale), and ``F`` is minimised from ``u = 1`` by at most ``iters`` (20) damped Newton
steps (step ``1 / (1 + lambda)`` with the Newton decrement ``lambda``, the full step once
``lambda < 1/4``: F is self-concordant, so every iterate stays positive and the last ones
converge quadratically, so they stop once the Newton decrement is at rounding level); the
steps run on the host in float64 NumPy after ONE device-to-host copy of the ``T x T`` matrix
(``host.fetch``: the one sync of the solve; on the device they were ~90 kernel launches each);
``C`` gets a ``1e-8`` ridge so that ``w`` stays finite when no
solution exists (the gradients are Pareto-stationary: a non-negative combination is 0). A task
whose gradient is 0 has no solution either and gets weight 0 (the others are solved without it).
The scale is the paper's equation on the true Gram matrix (the authors' code normalises the
Gram matrix for their solver only; its constraint keeps the unnormalised equation).

``update_every`` k: the weights are recomputed every k-th step and reused in between, as in the
authors' code (they are a buffer, with the step counter). ``max_norm``: the update is scaled
down to this norm when longer (the authors' ``clip_grad_norm_`` of the shared parameters'
gradient), applied every step to the weights in use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.registry import BALANCERS, ConfigError

ITERS = 20
RIDGE = 1e-8
# A gradient with ||g_i||^2 below this fraction of the largest counts as 0.
REL_ZERO = 1e-12
# A Newton decrement below this: the iterate is converged to float64 rounding.
CONVERGED = 1e-10


def solve_nash(gram: np.ndarray, iters: int = ITERS) -> np.ndarray:
    """The float64 [T] solution of ``gram w = 1 / w`` (0 for a zero gradient) for a float64
    Gram matrix, by damped Newton on the correlation matrix (see the module docstring)."""
    T = gram.shape[0]
    sq = np.diagonal(gram)
    active = sq > REL_ZERO * max(sq.max(), 0.0)
    norms = np.where(active, np.sqrt(np.clip(sq, 1e-300, None)), 1.0)
    eye = np.eye(T)
    both = active[:, None] & active[None, :]
    # A zero task's row and column become the identity's: it solves u^2 = 1 on its own.
    C = np.where(both, gram / (norms[:, None] * norms[None, :]), eye) + RIDGE * eye
    u = np.ones(T)
    for _ in range(iters):
        grad = C @ u - 1 / u
        hess = C + np.diag(1 / (u * u))
        step = np.linalg.solve(hess, -grad)
        decrement = math.sqrt(max(-(grad @ step), 0.0))
        t = 1.0 if decrement < 0.25 else 1 / (1 + decrement)
        u = np.clip(u + t * step, 1e-300, None)  # stays positive in exact arithmetic anyway
        if decrement < CONVERGED:  # quadratic convergence: a further step is below rounding
            break
    return np.where(active, u / norms, 0.0)


def clip_weights(w: Tensor, gram: Tensor, max_norm: float | None) -> Tensor:
    """``w`` scaled so that ``||w^T G|| = sqrt(w^T gram w) <= max_norm`` (unchanged if None)."""
    if max_norm is None:
        return w
    M = gram.detach().to(torch.float64)
    w64 = w.to(torch.float64)
    norm = (w64 @ M @ w64).clamp_min(0).sqrt()
    scale = torch.where(norm > max_norm, max_norm / norm.clamp_min(1e-300),
                        torch.ones_like(norm))
    return (w64 * scale).to(w.dtype)


@register_aggregator("nash_mtl")
def nash_mtl_weights(gram: Tensor, iters: int = ITERS, max_norm: float | None = None) -> Tensor:
    """Nash-MTL's weights float32[T] from the Gram matrix ``G G^T`` (``(G G^T) w = 1/w``),
    then clipped to ``max_norm``."""
    (M,) = fetch(gram)
    return clip_weights(upload(solve_nash(M, iters), gram), gram, max_norm)


@BALANCERS.register("nash_mtl")
class NashMTL(GradientBalancer):
    """Nash-MTL (see the module docstring). Options: ``update_every`` (recompute the weights
    every k steps), ``max_norm`` (clip the update's norm; none by default), ``iters`` (Newton
    steps). The last weights and the step count are buffers."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", update_every: int = 1,
                 max_norm: float | None = None, iters: int = ITERS) -> None:
        super().__init__(tasks, mode)
        for name, v in (("update_every", update_every), ("iters", iters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"balancer.{name} must be a positive integer, got {v!r}")
        if max_norm is not None and (isinstance(max_norm, bool)
                                     or not isinstance(max_norm, (int, float))
                                     or not math.isfinite(max_norm) or max_norm <= 0):
            raise ConfigError(f"balancer.max_norm must be a positive number or null, got "
                              f"{max_norm!r}")
        self.update_every = update_every
        self.max_norm = None if max_norm is None else float(max_norm)
        self.iters = iters
        T = len(self.tasks)
        self.register_buffer("last_weights", torch.ones(T))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        rows = self.task_rows(gram.shape[0])
        (M,) = fetch(gram)
        w = upload(solve_nash(M, self.iters), gram)
        if self.update_every > 1:
            # Branch-free (no host read of the counter): solved every step, kept when due.
            due = self.step % self.update_every == 0
            w = torch.where(due, w, self.gather(self.last_weights, rows))
        self.scatter(self.last_weights, rows, w)
        self.step.add_(1)
        return clip_weights(w, gram, self.max_norm)
