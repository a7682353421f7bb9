"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer
from mtvision.registry import BALANCERS, ConfigError


@BALANCERS.register("dwa")
class DynamicWeightAverage(Balancer):
    """Weights from the rate at which each task's average loss falls.

    S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
    (eq. 7)::

        w_i(k) = T exp(r_i(k-1) / temperature) / sum_j exp(r_j(k-1) / temperature)
        r_i(k-1) = L_i(k-1) / L_i(k-2)

    with ``L_i(k)`` the average loss of task i over period k, and w_i = 1 for the first two
    periods. The paper's period is an epoch; a balancer does not see epochs, so the period is
    ``period`` iterations (calls of ``weights``). ``temperature`` 2 is the paper's.

    The running sums, the last two period averages and the current weights are buffers, so a
    resumed run continues mid-period. A task with no loss in a whole period (not labelled in
    any of its batches) keeps its previous average, i.e. its next ratio is 1.
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0,
                 period: int = 100) -> None:
        super().__init__(tasks)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ConfigError(f"balancer.temperature must be a positive number, got "
                              f"{temperature!r}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ConfigError(f"balancer.period must be a positive integer (iterations), got "
                              f"{period!r}")
        self.temperature = float(temperature)
        self.period = period
        T = len(self.tasks)
        self.register_buffer("sums", torch.zeros(T))     # loss sums of the current period
        self.register_buffer("counts", torch.zeros(T))   # steps with a loss, current period
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # in the period
        self.register_buffer("history", torch.zeros(2, T))  # averages of periods k-1, k-2
        self.register_buffer("known", torch.zeros(2, T, dtype=torch.bool))
        self.register_buffer("current", torch.ones(T))   # the weights of this period

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """This period's weights; records ``losses`` (one call per training step)."""
        dev = self.current.device
        one = torch.ones((), device=dev)
        L, present = self.stack_losses(losses, 0.0, dev)
        present = present.float()
        out = self.current.clone()  # the buffer is updated in place below

        self.sums.add_(L * present)
        self.counts.add_(present)
        self.step.add_(1)
        # Branch-free period end (no host sync on the step counter): everything is computed
        # every step and kept only where ``done``.
        done = self.step >= self.period
        seen = self.counts > 0
        avg = torch.where(seen, self.sums / self.counts.clamp_min(1.0), self.history[0])
        history = torch.stack([avg, self.history[0]])
        known = torch.stack([seen | self.known[0], self.known[0]])
        ratio = torch.where(known[0] & known[1],
                            history[0] / history[1].clamp_min(torch.finfo(torch.float32).tiny),
                            one)
        new = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        self.history.copy_(torch.where(done, history, self.history))
        self.known.copy_(torch.where(done, known, self.known))
        self.current.copy_(torch.where(done, new, self.current))
        keep = (~done).to(self.sums.dtype)
        self.sums.mul_(keep)
        self.counts.mul_(keep)
        self.step.mul_((~done).long())
        return {t: out[i] for i, t in enumerate(self.tasks) if t in losses}
