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

The visiting order is drawn on the device (``pcgrad.conflict_order``); the ``T - 1``
sequential steps, ~40 tiny kernels each on the device, run on the host in float64 NumPy after
ONE device-to-host copy of the Gram matrix, the targets and the order together
(``host.fetch``: the one sync of the step), and the results come back in one copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mtvision.balancing.base import DrawsRandomNumbers
from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
from mtvision.balancing.pcgrad import conflict_order
from mtvision.registry import BALANCERS, ConfigError

MIN_SIN2 = 1e-8


def gradvac_step(gram: Tensor, targets: Tensor, generator: torch.Generator | None = None,
                 random_order: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """One GradVac step on the Gram matrix ``G G^T`` with targets [T, T]: the weights
    float32[T], the observed cosines float32[T, T] and bool[T, T], where a pair was observed
    (both gradients nonzero). ``generator``: see ``pcgrad.conflict_order``."""
    T = gram.shape[0]
    if T == 1:
        return (torch.ones(1, device=gram.device), torch.zeros(1, 1, device=gram.device),
                torch.zeros(1, 1, dtype=torch.bool, device=gram.device))
    order = conflict_order(T, gram.device, generator, random_order)
    M, tgt, order = fetch(gram, targets, order)
    tgt = np.clip(tgt, -1.0, 1.0)
    order = order.astype(np.int64)
    rows = np.arange(T)
    C = np.eye(T)
    seen_cos = np.zeros((T, T))
    seen = np.zeros((T, T), dtype=bool)
    norms = np.sqrt(np.clip(np.diagonal(M), 0, None))
    for k in range(T - 1):
        j = order[:, k]
        CM = C @ M
        dots = CM[rows, j]
        n_i = np.sqrt(np.clip(np.einsum("ij,ij->i", CM, C), 0, None))  # ||g_i^PC||
        n_j = norms[j]
        ok = (n_i > 0) & (n_j > 0)
        phi = np.clip(np.where(ok, dots / np.where(ok, n_i * n_j, 1.0), 0.0), -1.0, 1.0)
        t = tgt[rows, j]
        sin_t = np.sqrt(np.clip(1 - t * t, MIN_SIN2, None))
        sin_phi = np.sqrt(np.clip(1 - phi * phi, 0, None))
        coef = n_i * (t * sin_phi - phi * sin_t) / (np.where(ok, n_j, 1.0) * sin_t)
        C[rows, j] += np.where(ok & (phi < t), coef, 0.0)
        seen_cos[rows, j] = phi
        seen[rows, j] = ok
    out = upload(np.concatenate([C.sum(0)[:, None], seen_cos, seen], axis=1), gram)
    return out[:, 0], out[:, 1:T + 1], out[:, T + 1:] > 0.5


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
