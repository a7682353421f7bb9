"""Test-only reference: the solver of ``mtvision.balancing.cagrad`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import math

import torch
from torch import Tensor

ITERS = 50
STEP_SIZES = 24
SMOOTH = 1e-12
RESCALES = (0, 1, 2)


def project_simplex(Y: Tensor) -> Tensor:
    """Euclidean projection of each row of ``Y`` [..., T] onto the probability simplex (sort
    based: Held, Wolfe & Crowder 1974; Duchi et al. 2008)."""
    T = Y.shape[-1]
    U = Y.sort(dim=-1, descending=True).values
    css = U.cumsum(-1) - 1
    k = torch.arange(1, T + 1, dtype=Y.dtype, device=Y.device)
    # The condition holds on a prefix: its last index is the argmax of cond * k.
    rho = ((U - css / k) > 0).to(Y.dtype).mul(k).argmax(-1, keepdim=True)
    theta = css.gather(-1, rho) / (rho + 1).to(Y.dtype)
    return (Y - theta).clamp_min(0)


def _dual(X: Tensor, M: Tensor, Mb: Tensor, r: Tensor, eps: Tensor) -> Tensor:
    """The dual objective ``x^T M b + r sqrt(x^T M x + eps)`` of each row of ``X``."""
    return X @ Mb + r * (((X @ M) * X).sum(-1) + eps).sqrt()


def solve_dual(M: Tensor, r: Tensor, iters: int = ITERS) -> Tensor:
    """The minimiser x (float64 [T]) of the CAGrad dual for a float64 Gram matrix and radius
    ``r = sqrt(phi)`` (see the module docstring)."""
    T = M.shape[0]
    dev, dt = M.device, M.dtype
    b = torch.full((T,), 1.0 / T, dtype=dt, device=dev)
    Mb = M @ b
    scale = M.diagonal().max().clamp_min(1e-300)
    eps = SMOOTH * scale
    etas = 4.0 / scale * 2.0 ** -torch.arange(STEP_SIZES, dtype=dt, device=dev)
    x = b
    for _ in range(iters):
        Mx = M @ x
        grad = Mb + r * Mx / ((x @ Mx) + eps).sqrt()
        cand = torch.cat([x[None], project_simplex(x[None] - etas[:, None] * grad[None])])
        f = _dual(cand, M, Mb, r, eps)
        best = torch.where(torch.isfinite(f), f, math.inf).argmin()
        # index_select, not cand[best]: indexing with a 0-dim tensor reads it on the host.
        x = cand.index_select(0, best.reshape(1))[0]
    return x


def cagrad_weights(gram: Tensor, c: float = 0.4, rescale: int = 1, iters: int = ITERS) -> Tensor:
    """CAGrad's weights float32[T] from the Gram matrix ``G G^T``."""
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    b = torch.full((T,), 1.0 / T, dtype=M.dtype, device=M.device)
    r = c * M.mean().clamp_min(0).sqrt()  # ||g0||^2 = 1^T M 1 / T^2
    x = solve_dual(M, r, iters) if c > 0 else b
    gw = (x @ M @ x).clamp_min(0).sqrt()
    lam = torch.where(gw > 0, r / gw.clamp_min(1e-300), torch.zeros_like(gw))
    w = b + lam * x
    divisor = (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    return (w / divisor).float()
