"""Soft parameter sharing (Duong et al. 2015; Yang & Hospedales 2017).

Each task has its own backbone (and neck) copy; nothing is shared, but the copies are pulled
together by an L2 penalty on the distance between corresponding parameters, added to the
training loss:

    R = lambda * sum_{a < b} sum_k || theta_a^k - theta_b^k ||^2

over the tasks' pairs (a, b) and the corresponding parameter tensors k of their backbones
(and necks with ``include_neck``), from the differences themselves (exactly 0 for equal
copies; ``T sum ||x_a||^2 - ||sum x_a||^2`` would lose them to cancellation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtvision.models.sharing.base import PerTaskSharing, SharingParts, task_key
from mtvision.registry import SHARING, ConfigError


@SHARING.register("soft")
class SoftSharing(PerTaskSharing):
    """One backbone + neck per task, L2-tied by ``regularization()``.

    ``penalty_weight`` (lambda, default 1e-3): the gradient on copy a is
    ``2 lambda sum_b (theta_a - theta_b)``, a spring of stiffness ``2 lambda (T-1)`` towards
    the mean of the other copies. The copies start identical, so R starts at 0 and grows as the
    tasks pull them apart; 1e-3 keeps it small next to task losses of order 1 at the start
    (raise it towards hard sharing, lower it towards independent networks).
    ``include_neck``: tie the necks too (default: the backbones only).
    No parameter is shared: gradient balancers in mode ``param`` have nothing to work on.
    """

    name = "soft"

    def __init__(self, parts: SharingParts, penalty_weight: float = 1e-3,
                 include_neck: bool = False) -> None:
        super().__init__(parts)
        if penalty_weight < 0:
            raise ConfigError(f"model.sharing.penalty_weight must be >= 0, got {penalty_weight}")
        self.penalty_weight = float(penalty_weight)
        self.include_neck = include_neck

    def extract(self, backbone: nn.Module, neck: nn.Module | None, images: Tensor,
                tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for t in tasks or self.tasks:
            feats = backbone[t](images)
            if neck is not None:
                feats = {**feats, **neck[t](feats)}
            out.update({task_key(t, n): f for n, f in feats.items()})
        return out

    def shared_parameters(self, backbone: nn.Module, neck: nn.Module | None
                          ) -> list[nn.Parameter]:
        return []

    def distance(self, copies: nn.ModuleDict) -> Tensor:
        """sum_{a<b} ||theta_a - theta_b||^2 over the copies' trainable parameters (frozen
        ones are equal copies and add 0), each copy flattened into one vector."""
        per_task = [list(copies[t].parameters()) for t in self.tasks]
        keep = [i for i, group in enumerate(zip(*per_task, strict=True))
                if any(p.requires_grad for p in group)]
        if len(per_task) < 2 or not keep:
            return torch.zeros((), device=per_task[0][0].device)
        flat = [torch.cat([ps[i].reshape(-1).float() for i in keep]) for ps in per_task]
        return torch.stack([(flat[a] - flat[b]).pow(2).sum()
                            for a in range(len(flat)) for b in range(a + 1, len(flat))]).sum()

    def regularization(self, backbone: nn.Module, neck: nn.Module | None) -> Tensor:
        """``penalty_weight`` times the summed squared distances (module docstring)."""
        total = self.distance(backbone)
        if self.include_neck and neck is not None:
            total = total + self.distance(neck)
        return self.penalty_weight * total
