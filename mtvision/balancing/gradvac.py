"""GradVac: Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao, "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021 (Algorithm 1).

For each task i and each other task j (a random order per task, as PCGrad), with the observed
cosine ``phi = cos(g_i^PC, g_j)`` and the target ``t = phi_hat_ij``::

    if phi < t:  g_i^PC <- g_i^PC + ||g_i^PC|| (t sqrt(1 - phi^2) - phi sqrt(1 - t^2))
                                    / (||g_j|| sqrt(1 - t^2)) g_j
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi          (every visited pair)
    update = sum_i g_i^PC

The targets start at 0 (so the first step is PCGrad's projection) and are a ``T x T`` buffer.
As for PCGrad, each ``g_i^PC`` is a combination ``c_i^T G`` and everything runs on the Gram
matrix; the update is ``w^T G`` with ``w = sum_i c_i`` (a sum, the paper's scale). The paper
applies the rule per layer of a Transformer; here it is applied to the whole gradient of the
shared parameters (or features). A pair involving a zero gradient is skipped (no change, no
target update); ``1 - t^2`` is floored at 1e-8 so a target of 1 stays finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import DrawsRandomNumbers
from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.pcgrad import conflict_order
from mtvision.registry import BALANCERS, ConfigError

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


@register_aggregator("gradvac")
def gradvac_weights(gram: Tensor, targets: Tensor | float = 0.0,
                    generator: torch.Generator | None = None,
                    random_order: bool = True) -> Tensor:
    """GradVac's weights float32[T] for given targets (a [T, T] tensor or one number; 0, the
    method's first step, by default)."""
    T = gram.shape[0]
    if not isinstance(targets, Tensor):
        targets = torch.full((T, T), float(targets), device=gram.device)
    return gradvac_step(gram, targets, generator, random_order)[0]


@BALANCERS.register("gradvac")
class GradVac(DrawsRandomNumbers, GradientBalancer):
    """GradVac (see the module docstring). Options: ``beta`` (the targets' EMA rate, 0.01),
    ``random_order``. The targets are a buffer; the order comes from the balancer's own
    generator, a function of (seed, iteration), like PCGrad's."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", beta: float = 0.01,
                 random_order: bool = True) -> None:
        super().__init__(tasks, mode)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) \
                or not math.isfinite(beta) or not 0 < beta <= 1:
            raise ConfigError(f"balancer.beta must be in (0, 1], got {beta!r}")
        if not isinstance(random_order, bool):
            raise ConfigError(f"balancer.random_order must be true or false, got "
                              f"{random_order!r}")
        self.beta = float(beta)
        self.random_order = random_order
        T = len(self.tasks)
        self.register_buffer("targets", torch.zeros(T, T))

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        rows = self.task_rows(gram.shape[0])
        targets = self.gather(self.targets, rows, square=True)
        w, cos, seen = gradvac_step(gram, targets, self.draws.generator(gram.device),
                                    self.random_order)
        new = torch.where(seen, (1 - self.beta) * targets + self.beta * cos, targets)
        self.scatter(self.targets, rows, new, square=True)
        return w
