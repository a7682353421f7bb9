"""DB-MTL: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok,
"Dual-Balancing for Multi-Task Learning", arXiv 2308.12029, 2023.

Loss-scale balancing: each task's loss is replaced by ``log(L_i + 1e-8)``, whose gradient is
``h_i = g_i / (L_i + 1e-8)``. Gradient-magnitude balancing: each ``h_i`` is scaled to the
largest norm, with an EMA ``m_i`` of ``||h_i||``::

    m_i <- beta_t m_i + (1 - beta_t) ||h_i||,   beta_t = beta / step^beta_sigma   (m_i(0) = 0)
    alpha_i = max_j m_j / m_i,     update = sum_i alpha_i h_i = w^T G,  w_i = alpha_i / (L_i + 1e-8)

(``beta`` 0.9 and ``beta_sigma`` 0 are LibMTL's defaults.) Simplification: the authors'
code (LibMTL) keeps the EMA of the full gradient vectors and both takes the norms of it and
applies it as the update; that costs T x P memory, so here the EMA is of the norms (from the
Gram diagonal) and the update uses this step's gradients. A loss at or below 0 is floored at
0 before adding 1e-8 (the log needs a positive argument); a task whose norm estimate is 0
gets weight 0 (LibMTL's ``+1e-8`` would give it ``max / 1e-8``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError

LOG_EPS = 1e-8  # inside the log, as in LibMTL


def log_loss_norms(gram: Tensor, losses: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``1 / (L_i + 1e-8)`` and ``||h_i||`` (both float64 [T]) from the Gram matrix."""
    M = gram.detach().to(torch.float64)
    T = M.shape[0]
    L = (torch.ones(T, dtype=M.dtype, device=M.device) if losses is None
         else losses.detach().to(M.dtype).reshape(T))
    inv = 1 / (L.clamp_min(0) + LOG_EPS)
    return inv, M.diagonal().clamp_min(0).sqrt() * inv


@register_aggregator("db_mtl")
def db_mtl_weights(gram: Tensor, losses: Tensor | None = None,
                   norms: Tensor | None = None) -> Tensor:
    """DB-MTL's weights float32[T] from the Gram matrix ``G G^T``, the losses [T] (ones when
    None) and the estimates ``m`` [T] of the log-loss gradients' norms (this step's norms when
    None)."""
    inv, current = log_loss_norms(gram, losses)
    m = current if norms is None else norms.detach().to(current.dtype)
    alpha = torch.where(m > 0, m.max() / m.clamp_min(1e-300), torch.zeros_like(m))
    return (alpha * inv).float()


@BALANCERS.register("db_mtl")
class DBMTL(GradientBalancer):
    """DB-MTL (see the module docstring). Options: ``beta`` (0.9), ``beta_sigma`` (0). The
    norm EMA and the step count are buffers."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", beta: float = 0.9,
                 beta_sigma: float = 0.0) -> None:
        super().__init__(tasks, mode)
        for name, v in (("beta", beta), ("beta_sigma", beta_sigma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (name == "beta" and v >= 1):
                raise ConfigError(f"balancer.{name} must be a number in "
                                  f"{'[0, 1)' if name == 'beta' else '[0, inf)'}, got {v!r}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        T = len(self.tasks)
        self.register_buffer("norm_ema", torch.zeros(T))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        rows = self.task_rows(gram.shape[0])
        self.step.add_(1)
        beta_t = self.beta / self.step.double() ** self.beta_sigma
        _, current = log_loss_norms(gram, losses)
        m = beta_t * self.gather(self.norm_ema, rows).double() + (1 - beta_t) * current
        self.scatter(self.norm_ema, rows, m)
        return db_mtl_weights(gram, losses, m)
