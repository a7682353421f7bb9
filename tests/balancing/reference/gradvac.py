"""Test-only reference: the solver of ``mtvision.balancing.gradvac`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor

from tests.balancing.reference.pcgrad import conflict_order

MIN_SIN2 = 1e-8


def gradvac_step(gram: Tensor, targets: Tensor, generator: torch.Generator | None = None,
                 random_order: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """One GradVac step on the Gram matrix ``G G^T`` with targets [T, T]: the weights
    float32[T], the observed cosines float32[T, T] and bool[T, T], where a pair was observed
    (both gradients nonzero). ``generator``: see ``pcgrad.conflict_order``."""
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    dev, dt = M.device, M.dtype
    tgt = targets.detach().to(dt).clamp(-1.0, 1.0)
    C = torch.eye(T, dtype=dt, device=dev)
    seen_cos = torch.zeros(T, T, dtype=dt, device=dev)
    seen = torch.zeros(T, T, dtype=torch.bool, device=dev)
    if T == 1:
        return C.sum(0).float(), seen_cos.float(), seen
    order = conflict_order(T, dev, generator, random_order)
    norms = M.diagonal().clamp_min(0).sqrt()
    zero = torch.zeros((), dtype=dt, device=dev)
    for k in range(T - 1):
        j = order[:, k:k + 1]
        CM = C @ M
        dots = CM.gather(1, j)
        n_i = (CM * C).sum(1, keepdim=True).clamp_min(0).sqrt()  # ||g_i^PC||
        n_j = norms.gather(0, j[:, 0])[:, None]
        ok = (n_i > 0) & (n_j > 0)
        phi = torch.where(ok, dots / (n_i * n_j).clamp_min(1e-300), zero).clamp(-1.0, 1.0)
        t = tgt.gather(1, j)
        sin_t = (1 - t * t).clamp_min(MIN_SIN2).sqrt()
        sin_phi = (1 - phi * phi).clamp_min(0).sqrt()
        coef = n_i * (t * sin_phi - phi * sin_t) / (n_j.clamp_min(1e-300) * sin_t)
        C = C.scatter_add(1, j, torch.where(ok & (phi < t), coef, zero))
        seen_cos = seen_cos.scatter(1, j, phi)
        seen = seen.scatter(1, j, ok)
    return C.sum(0).float(), seen_cos.float(), seen


def gradvac_weights(gram: Tensor, targets: Tensor | float = 0.0,
                    generator: torch.Generator | None = None,
                    random_order: bool = True) -> Tensor:
    """GradVac's weights float32[T] for given targets (a [T, T] tensor or one number; 0, the
    method's first step, by default)."""
    T = gram.shape[0]
    if not isinstance(targets, Tensor):
        targets = torch.full((T, T), float(targets), device=gram.device)
    return gradvac_step(gram, targets, generator, random_order)[0]
