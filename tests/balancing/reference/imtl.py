"""Test-only reference: the solver of ``mtvision.balancing.imtl`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor

REL_ZERO = 1e-12  # ||g_t||^2 below this fraction of the largest: a zero gradient
TIKHONOV = 1e-12  # of the squared system's largest diagonal entry
RESIDUAL = 1e-8   # relative residual above which the LU solution is rejected


def imtl_g_weights(gram: Tensor) -> Tensor:
    """IMTL-G's weights float32[T] (summing to 1) from the Gram matrix ``G G^T``."""
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    dev, dt = M.device, M.dtype
    sq = M.diagonal()
    active = sq > REL_ZERO * sq.max().clamp_min(0)
    norms = sq.clamp_min(0).sqrt()
    # Both unknown blocks are O(1): projections in units of the mean gradient norm.
    unit = (norms * active).sum() / active.sum().clamp_min(1)
    unit = torch.where(unit > 0, unit, torch.ones_like(unit))
    K = torch.where(active[None, :], M / torch.where(active, norms, 1.0)[None, :], 0.0) / unit
    eye = torch.eye(T, dtype=dt, device=dev)
    # Row t: sum_i a_i K[i, t] - s = 0 (active t) or a_t = 0; last row: sum_i a_i = 1.
    top = torch.where(active[:, None], torch.cat([K.T, -torch.ones(T, 1, dtype=dt, device=dev)],
                                                 dim=1),
                      torch.cat([eye, torch.zeros(T, 1, dtype=dt, device=dev)], dim=1))
    last = torch.cat([torch.ones(1, T, dtype=dt, device=dev),
                      torch.zeros(1, 1, dtype=dt, device=dev)], dim=1)
    A = torch.cat([top, last])
    rhs = torch.zeros(T + 1, 1, dtype=dt, device=dev)
    rhs[T] = 1.0
    x_lu, _ = torch.linalg.solve_ex(A, rhs)
    AtA = A.T @ A
    reg = TIKHONOV * AtA.diagonal().max() * torch.eye(T + 1, dtype=dt, device=dev)
    x_ls, _ = torch.linalg.solve_ex(AtA + reg, A.T @ rhs)
    ok = torch.isfinite(x_lu).all() & ((A @ x_lu - rhs).norm() <= RESIDUAL)
    x = torch.where(ok, x_lu, x_ls)
    x = torch.where(torch.isfinite(x), x, 0.0)
    return x[:T, 0].float()
