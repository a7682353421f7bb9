"""Test-only reference: the solver of ``mtvision.balancing.nash_mtl`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor

ITERS = 20
RIDGE = 1e-8
# A gradient with ||g_i||^2 below this fraction of the largest counts as 0.
REL_ZERO = 1e-12


def solve_nash(gram: Tensor, iters: int = ITERS) -> Tensor:
    """The float64 [T] solution of ``gram w = 1 / w`` (0 for a zero gradient) for a float64
    Gram matrix, by damped Newton on the correlation matrix (see the module docstring)."""
    T = gram.shape[0]
    dev, dt = gram.device, gram.dtype
    sq = gram.diagonal()
    active = sq > REL_ZERO * sq.max().clamp_min(0)
    norms = torch.where(active, sq.clamp_min(1e-300).sqrt(), torch.ones_like(sq))
    eye = torch.eye(T, dtype=dt, device=dev)
    both = active[:, None] & active[None, :]
    # A zero task's row and column become the identity's: it solves u^2 = 1 on its own.
    C = torch.where(both, gram / (norms[:, None] * norms[None, :]), eye) + RIDGE * eye
    u = torch.ones(T, dtype=dt, device=dev)
    one = torch.ones((), dtype=dt, device=dev)
    for _ in range(iters):
        grad = C @ u - 1 / u
        hess = C + torch.diag(1 / (u * u))
        step, _ = torch.linalg.solve_ex(hess, -grad)
        decrement = (-(grad * step).sum()).clamp_min(0).sqrt()
        t = torch.where(decrement < 0.25, one, 1 / (1 + decrement))
        u = (u + t * step).clamp_min(1e-300)  # stays positive in exact arithmetic anyway
    return torch.where(active, u / norms, torch.zeros_like(u))


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


def nash_mtl_weights(gram: Tensor, iters: int = ITERS, max_norm: float | None = None) -> Tensor:
    """Nash-MTL's weights float32[T] from the Gram matrix ``G G^T`` (``(G G^T) w = 1/w``),
    then clipped to ``max_norm``."""
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    return clip_weights(solve_nash(M, iters), M, max_norm).float()
