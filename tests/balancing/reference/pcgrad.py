"""Test-only reference: the solver of ``mtvision.balancing.pcgrad`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor


def conflict_order(T: int, device: torch.device, generator: torch.Generator | None = None,
                   random_order: bool = True) -> Tensor:
    """int64 [T, T-1]: row i lists the other tasks in the order task i visits them (a random
    permutation per row drawn from ``generator``, torch's default generator of ``device`` when
    None; ascending when not ``random_order``)."""
    if random_order:
        keys = torch.rand(T, T, device=device, generator=generator)
        keys.fill_diagonal_(2.0)  # above every U(0, 1) key: task i itself sorts last
        return keys.argsort(dim=1)[:, :T - 1]
    k = torch.arange(T - 1, device=device)
    i = torch.arange(T, device=device)[:, None]
    return k[None, :] + (k[None, :] >= i).long()


def pcgrad_weights(gram: Tensor, generator: torch.Generator | None = None,
                   random_order: bool = True) -> Tensor:
    """PCGrad's weights float32[T] from the Gram matrix ``G G^T`` (``generator``: see
    ``conflict_order``; it must live on ``gram``'s device)."""
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    if T == 1:
        return torch.ones(1, dtype=torch.float32, device=M.device)
    order = conflict_order(T, M.device, generator, random_order)
    sq = M.diagonal()
    C = torch.eye(T, dtype=M.dtype, device=M.device)  # row i: g_i^PC = C[i] @ G
    zero = torch.zeros((), dtype=M.dtype, device=M.device)
    for k in range(T - 1):
        j = order[:, k:k + 1]                          # [T, 1]: task i's k-th other task
        dots = (C @ M).gather(1, j)                    # g_i^PC . g_j
        sq_j = sq.gather(0, j[:, 0])[:, None]          # ||g_j||^2
        coef = torch.where((dots < 0) & (sq_j > 0), dots / sq_j.clamp_min(1e-300), zero)
        C = C.scatter_add(1, j, -coef)
    return C.sum(0).float()
