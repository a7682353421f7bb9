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
T problems with quadprog on the CPU; here they are batched on the device and solved by a fixed
``iters`` (20) projected Newton steps (Bertsekas 1982): the variables above their bound or with
a descending gradient are free, the Newton point on them is solved exactly (``solve_ex``), and
16 step lengths along it plus 16 projected-gradient steps are tried at once, the best kept. On
a box-constrained quadratic this reaches the exact solution in a few steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError

ITERS = 20
REG_EPS = 1e-4
STEP_SIZES = 16


def project_dual_cone(Q: Tensor, lower: Tensor, iters: int = ITERS) -> Tensor:
    """The rows ``v_i = argmin_{v >= lower_i} v^T Q v`` (float64 [B, T]) for a positive
    definite float64 ``Q`` [T, T] and bounds ``lower`` [B, T]."""
    B, T = lower.shape
    dev, dt = Q.device, Q.dtype
    halves = 2.0 ** -torch.arange(STEP_SIZES, dtype=dt, device=dev)
    etas = halves / (2 * Q.diagonal().max())
    batch = torch.arange(B, device=dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    V = lower.clone()
    for _ in range(iters):
        grad = V @ Q  # half the objective's gradient
        pg = torch.maximum(V[:, None] - etas[None, :, None] * 2 * grad[:, None],
                           lower[:, None])
        free = (V > lower) | (grad < 0)
        # Newton on the free variables, the others held at their bound.
        both = free[:, :, None] & free[:, None, :]
        A = torch.where(both, Q, zero) + torch.diag_embed((~free).to(dt))
        held = torch.where(free, zero, lower)
        rhs = torch.where(free, -(held @ Q), lower)
        newton, _ = torch.linalg.solve_ex(A, rhs)
        nt = torch.maximum(V[:, None] + halves[None, :, None] * (newton - V)[:, None],
                           lower[:, None])
        cand = torch.cat([V[:, None], pg, nt], dim=1)  # [B, 1 + 2 STEP_SIZES, T]
        f = ((cand @ Q) * cand).sum(-1)
        best = torch.where(torch.isfinite(f), f, math.inf).argmin(dim=1)
        V = cand[batch, best]
    return V


@register_aggregator("upgrad")
def upgrad_weights(gram: Tensor, pref: Tensor | None = None, reg_eps: float = REG_EPS,
                   iters: int = ITERS) -> Tensor:
    """UPGrad's weights float32[T] from the Gram matrix ``G G^T`` and the preference vector
    ``pref`` [T] (non-negative; ``1/T`` each when None)."""
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    eye = torch.eye(T, dtype=M.dtype, device=M.device)
    trace = M.diagonal().sum()
    Q = M / torch.where(trace > 0, trace, 1.0) + reg_eps * eye
    p = (torch.full((T,), 1.0 / T, dtype=M.dtype, device=M.device) if pref is None
         else pref.detach().to(M.dtype))
    return project_dual_cone(Q, torch.diag(p), iters).sum(0).float()


@BALANCERS.register("upgrad")
class UPGrad(GradientBalancer):
    """UPGrad with the mean preference (see the module docstring). Options: ``reg_eps``,
    ``iters``."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", reg_eps: float = REG_EPS,
                 iters: int = ITERS) -> None:
        super().__init__(tasks, mode)
        if isinstance(reg_eps, bool) or not isinstance(reg_eps, (int, float)) \
                or not math.isfinite(reg_eps) or reg_eps <= 0:
            raise ConfigError(f"balancer.reg_eps must be a positive number, got {reg_eps!r}")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ConfigError(f"balancer.iters must be a positive integer, got {iters!r}")
        self.reg_eps = float(reg_eps)
        self.iters = iters

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return upgrad_weights(gram, None, self.reg_eps, self.iters)
