"""GradDrop: Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient
Sign Dropout", NeurIPS 2020.

Per coordinate j of the task gradients, the sign purity ``P_j = 0.5 (1 + sum_i g_ij /
sum_i |g_ij|)``; with ``u_j ~ U(0, 1)`` the positive components are kept where ``u_j < P_j``
and the negative ones elsewhere, and the kept components are summed. The rule is per
coordinate, not a weighting of the rows, so it runs as one pass over G (``kernels.graddrop``).
The paper applies it to the shared activations' gradients: ``mode: feature`` is that setting;
``mode: param`` applies it to the shared parameters' gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import DrawsRandomNumbers
from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.kernels import graddrop as graddrop_kernel
from mtvision.registry import BALANCERS


@register_aggregator("graddrop", kind="direct")
def graddrop(G: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The GradDrop update float32[P] of ``G`` [T, P]; ``u`` drawn from ``generator`` (torch's
    default generator of G's device when None)."""
    return graddrop_kernel(G, generator=generator)


@BALANCERS.register("graddrop")
class GradDrop(DrawsRandomNumbers, GradientBalancer):
    """GradDrop (see the module docstring). Draws ``u`` from the balancer's own generator
    (``balancing.draws``): a function of (seed, iteration), the same on every rank and in a
    resumed run. Its task weights are not defined: the log shows 1 for every task."""

    def __init__(self, tasks: Sequence[str], mode: str = "feature") -> None:
        super().__init__(tasks, mode)

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)

    def direction(self, G: Tensor, gram: Tensor | None, losses: Tensor,
                  combine: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        return graddrop(G, self.draws.generator(G.device))
