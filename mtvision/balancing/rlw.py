"""Random Loss Weighting (Lin, Ye, Zhang & Tsang, TMLR 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer, DrawsRandomNumbers
from mtvision.registry import BALANCERS


@BALANCERS.register("rlw")
class RandomLossWeighting(DrawsRandomNumbers, Balancer):
    """Fresh random weights every step.

    B. Lin, F. Ye, Y. Zhang, I. W. Tsang, "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning", TMLR 2022 (RLW with the normal distribution)::

        w = T softmax(z),    z ~ N(0, I_T)

    The paper normalises to sum 1; the factor T (tasks in this step's losses) keeps the scale
    of the equal-weight sum, so a learning rate tuned for ``fixed`` carries over. ``z`` comes
    from the balancer's own generator (``balancing.draws``): a function of (seed, iteration),
    the same on every rank and in a resumed run. No options; the generator is its only state.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """A new draw of ``T softmax(z)`` over the tasks in ``losses``."""
        tasks = list(losses)
        dev = losses[tasks[0]].device
        z = torch.randn(len(tasks), device=dev, generator=self.draws.generator(dev))
        w = len(tasks) * torch.softmax(z, dim=0)
        return {t: w[i] for i, t in enumerate(tasks)}
