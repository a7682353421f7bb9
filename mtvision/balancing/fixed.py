"""Fixed task weights: the plain weighted sum L = sum_i w_i L_i (equal weights by default)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer
from mtvision.registry import BALANCERS, ConfigError


@BALANCERS.register("fixed")
class FixedWeights(Balancer):
    """L = sum_i w_i L_i with constant ``weights`` (task name -> w; missing tasks weigh 1).

    With no weights this is equal weighting, the usual multi-task baseline.
    """

    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        for t in weights:
            if t not in self.tasks:
                raise ConfigError(f"balancer.weights names task '{t}', which the model does not "
                                  f"have (tasks: {', '.join(self.tasks)})")
        # A buffer, so it is on the losses' device: a host tensor there would be copied per
        # task and step, each copy a sync. From the config, not the checkpoint: not persistent.
        self.register_buffer("fixed", torch.tensor([float(weights.get(t, 1.0))
                                                    for t in self.tasks]), persistent=False)

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.fixed[self.tasks.index(t)] for t in losses}
