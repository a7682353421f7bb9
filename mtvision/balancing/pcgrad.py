"""PCGrad: T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn, "Gradient Surgery for
Multi-Task Learning", NeurIPS 2020 (Algorithm 1).

Each task gradient is projected in turn onto the normal plane of every other task gradient it
conflicts with, in a random order per task::

    g_i^PC <- g_i;  for j in shuffle(tasks \\ {i}):
        if g_i^PC . g_j < 0:  g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j
    update = sum_i g_i^PC

Every ``g_i^PC`` stays a combination ``c_i^T G`` of the original rows and every inner product
is ``c_i^T (G G^T) e_j``, so the method runs on the Gram matrix alone (the T problems batched,
T - 1 sequential steps) and returns ``w = sum_i c_i``: the update is ``w^T G``, the paper's
scale (a sum, not a mean). A zero ``g_j`` is never projected on.

The steps stay on the device (no sync) as a short fixed chain: the visit of step k is a
``T x T`` matrix ``W_k`` (``-1 / ||g_j||^2`` at ``(i, j)`` for the task j that task i visits,
0 elsewhere, and 0 for a zero ``g_j``: nothing is projected on it), built once, so each step
is ``C <- C + min(C M, 0) * W_k``: three launches, about 60 for the whole solve at T = 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import DrawsRandomNumbers
from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError


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


@register_aggregator("pcgrad")
def pcgrad_weights(gram: Tensor, generator: torch.Generator | None = None,
                   random_order: bool = True) -> Tensor:
    """PCGrad's weights float32[T] from the Gram matrix ``G G^T`` (``generator``: see
    ``conflict_order``; it must live on ``gram``'s device)."""
    # In the Gram matrix's own precision (float32 from the kernel): T - 1 projections lose
    # a few ulps, and it is symmetric up to rounding, so symmetrising it changes nothing.
    M = gram.detach().to(torch.promote_types(gram.dtype, torch.float32))
    T = M.shape[0]
    if T == 1:
        return torch.ones(1, dtype=torch.float32, device=M.device)
    order = conflict_order(T, M.device, generator, random_order)
    neg_inv = M.diagonal().reciprocal().neg_().nan_to_num_(neginf=0.0)  # 0 for a zero g_j
    visits = order.T[:, :, None] == torch.arange(T, device=M.device)  # [T-1, T, T]
    W = visits * neg_inv
    C = torch.eye(T, dtype=M.dtype, device=M.device)  # row i: g_i^PC = C[i] @ G
    for W_k in W.unbind(0):
        # (C M)[i, j] = g_i^PC . g_j, projected on g_j only when negative.
        C = torch.addcmul(C, torch.mm(C, M).clamp_max_(0), W_k)
    return C.sum(0).float()


@BALANCERS.register("pcgrad")
class PCGrad(DrawsRandomNumbers, GradientBalancer):
    """PCGrad (see the module docstring). The random order comes from the balancer's own
    generator (``balancing.draws``): a function of (seed, iteration), the same on every rank
    and in a resumed run. ``random_order: false`` visits the other tasks in ascending order
    instead."""

    def __init__(self, tasks: Sequence[str], mode: str = "param",
                 random_order: bool = True) -> None:
        super().__init__(tasks, mode)
        if not isinstance(random_order, bool):
            raise ConfigError(f"balancer.random_order must be true or false, got "
                              f"{random_order!r}")
        self.random_order = random_order

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return pcgrad_weights(gram, self.draws.generator(gram.device), self.random_order)
