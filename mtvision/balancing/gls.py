"""Geometric Loss Strategy (Chennupati et al., CVPR Workshops 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer
from mtvision.registry import BALANCERS, ConfigError


@BALANCERS.register("gls")
class GeometricLossStrategy(Balancer):
    """The geometric mean of the task losses.

    S. Chennupati, G. Sistu, S. Yogamani, S. A. Rawashdeh, "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019::

        total = (prod_i L_i)^(1/T)

    Its gradient is ``sum_i GLS / (T L_i) grad L_i``, so the detached weights
    ``w_i = GLS / (T L_i)`` through the plain weighted sum give the same gradient (and
    ``sum_i w_i L_i = GLS``). The product is taken as ``exp(mean log L_i)`` to stay finite for
    many tasks. Losses are clamped at ``eps`` first (a zero or negative loss would make the
    product 0 or its root undefined); a task with ``L_i <= eps`` gets weight 0, the derivative
    of the clamped product. T counts the tasks in this step's losses.
    """

    def __init__(self, tasks: Sequence[str], eps: float = 1e-8) -> None:
        super().__init__(tasks)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) \
                or eps <= 0:
            raise ConfigError(f"balancer.eps must be a positive number, got {eps!r}")
        self.eps = float(eps)

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """``GLS / (T L_i)`` per task (0 where ``L_i <= eps``), detached."""
        tasks = list(losses)
        L = torch.stack([losses[t].detach().float().reshape(()) for t in tasks])
        Lc = L.clamp_min(self.eps)
        gls = torch.exp(torch.log(Lc).mean())
        w = torch.where(L > self.eps, gls / (len(tasks) * Lc), torch.zeros_like(Lc))
        return {t: w[i] for i, t in enumerate(tasks)}
