"""Uncertainty weighting: learned per-task log-variances (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mtvision.balancing.base import Balancer
from mtvision.kernels import combine_losses
from mtvision.registry import BALANCERS, ConfigError


@BALANCERS.register("uncertainty")
class UncertaintyWeighting(Balancer):
    """Homoscedastic-uncertainty weighting.

    A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
    Scene Geometry and Semantics", CVPR 2018 (eq. 7)::

        total = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i        s_i = log sigma_i^2, learned

    The paper's regression form ``L_i / (2 sigma_i^2) + log sigma_i`` is used for every task (the
    common practice; its classification form drops the 1/2). ``log_vars`` is an
    ``nn.Parameter`` that the trainer adds to the optimizer (without weight decay) and saves in
    checkpoints. ``init_log_var``: the initial ``s_i`` (0: weights 1/2).
    """

    def __init__(self, tasks: Sequence[str], init_log_var: float = 0.0) -> None:
        super().__init__(tasks)
        if isinstance(init_log_var, bool) or not isinstance(init_log_var, (int, float)) \
                or not math.isfinite(init_log_var):
            raise ConfigError(f"balancer.init_log_var must be a finite number, got "
                              f"{init_log_var!r}")
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))

    def _present(self, losses: dict[str, Tensor]) -> list[int]:
        """Indices into ``self.tasks`` of the tasks in ``losses``, in ``self.tasks`` order."""
        self.check_tasks(losses)
        return [i for i, t in enumerate(self.tasks) if t in losses]

    def _log_vars_of(self, idx: list[int]) -> Tensor:
        if len(idx) == len(self.tasks):
            return self.log_vars
        # Basic indexing and a stack: a list index would copy an index tensor to the device.
        return torch.stack([self.log_vars[i] for i in idx])

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """The effective weights ``0.5 exp(-s_i)`` (detached; the total also has ``0.5 s_i``)."""
        idx = self._present(losses)
        w = 0.5 * torch.exp(-self._log_vars_of(idx).detach())
        return {self.tasks[i]: w[k] for k, i in enumerate(idx)}

    def backward(
        self,
        losses: dict[str, Tensor],
        shared_params: Sequence[Tensor] = (),
        features: dict[str, Tensor] | None = None,
        scale: Callable[[Tensor], Tensor] = lambda t: t,
        micro: tuple[int, int] = (0, 1),
    ) -> dict[str, Tensor]:
        """Back-propagate the uncertainty-weighted total (divided by the number of
        accumulated micro-batches) into the model and ``log_vars``."""
        idx = self._present(losses)
        tasks = [self.tasks[i] for i in idx]
        stacked = torch.stack([losses[t].float().reshape(()) for t in tasks])
        s = self._log_vars_of(idx)
        total = combine_losses(stacked, log_vars=s)
        scale(total / micro[1] if micro[1] > 1 else total).backward()
        w = 0.5 * torch.exp(-s.detach())
        return {t: w[k] for k, t in enumerate(tasks)}
