"""Test-only reference: the solver of ``mtvision.balancing.upgrad`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import math

import torch
from torch import Tensor

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
