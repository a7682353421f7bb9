"""Test-only reference: the solver of ``mtvision.balancing.gradnorm`` as it was before the solvers
moved to one host round trip / fewer launches (issue 15), kept verbatim to check that the
results did not change."""


from __future__ import annotations

import torch
from torch import Tensor

MIN_WEIGHT = 1e-3
MIN_LOSS = 1e-12


def gradnorm_step(gram: Tensor, losses: Tensor, initial_losses: Tensor, weights: Tensor,
                  alpha: float = 1.5, lr: float = 0.025) -> Tensor:
    """The task weights float32[T] after one GradNorm step from ``weights`` [T] (their sum is
    kept), for the Gram matrix ``G G^T``, this step's and the first losses [T]."""
    M = gram.detach().to(torch.float64)
    T = M.shape[0]
    norms = M.diagonal().clamp_min(0).sqrt()
    w = weights.detach().to(M.dtype).reshape(T)
    L = losses.detach().to(M.dtype).reshape(T).clamp_min(0)
    L0 = initial_losses.detach().to(M.dtype).reshape(T).clamp_min(MIN_LOSS)
    ratio = L / L0
    mean_ratio = ratio.mean()
    r = torch.where(mean_ratio > 0, ratio / mean_ratio.clamp_min(1e-300), torch.ones_like(ratio))
    Gw = w * norms
    target = Gw.mean() * r ** alpha
    new = (w - lr * torch.sign(Gw - target) * norms).clamp_min(MIN_WEIGHT)
    return (new * (w.sum() / new.sum())).float()


def gradnorm_weights(gram: Tensor, losses: Tensor | None = None,
                     initial_losses: Tensor | None = None, weights: Tensor | None = None,
                     alpha: float = 1.5, lr: float = 0.025) -> Tensor:
    """Stateless GradNorm: the weights after one step from ``weights`` (ones when None), with
    the losses and first losses [T] (ones when None: every rate 1)."""
    T = gram.shape[0]
    ones = torch.ones(T, device=gram.device)
    return gradnorm_step(gram, ones if losses is None else losses,
                         ones if initial_losses is None else initial_losses,
                         ones if weights is None else weights, alpha, lr)
