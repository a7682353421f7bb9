"""Fast Adaptive Multitask Optimization (Liu, Feng, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer
from mtvision.registry import BALANCERS, ConfigError

LOGITS_OPTIMIZERS = ("sgd", "adam")
EPS = 1e-8  # added to L_i - b_i as in the authors' code, so log and 1/x stay finite
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which the authors' code uses
ADAM_EPS = 1e-8


@BALANCERS.register("famo")
class FAMO(Balancer):
    """Task weights that make all log-losses fall at the same rate.

    B. Liu, Y. Feng, P. Stone, Q. Liu, "FAMO: Fast Adaptive Multitask Optimization",
    NeurIPS 2023 (Algorithm 1). With task logits ``xi``, ``z = softmax(xi)`` and
    ``D_i = L_i - b_i``::

        loss  = sum_i (z_i / c) log D_i,         c = sum_i z_i / D_i   (c detached)
        grad  = sum_i w_i grad L_i,              w_i = (z_i / D_i) / c  (sum_i w_i = 1)
        delta = J_softmax(xi)^T [log D_i(t) - log D_i(t+1)]_i
        xi   <- xi - w_lr (delta + gamma xi)

    The weights are returned as ``w_i`` (summing to 1, the paper's convex combination, not T:
    the update is about 1/T of the equal-weight sum's) and combined by the base class's
    weighted sum, which has the same gradient as the log form.

    ``L(t+1)``: the authors' code measures it with an extra forward pass on the same batch
    after the optimizer step; a balancer gets no such pass, so the next step's losses (on the
    next batch) stand in for it. The update of ``xi`` from step t therefore happens at the
    start of step t+1's ``weights``, before that step's weights are computed; the previous
    step's ``D`` and the logits (and Adam's moments) are buffers, so a resume continues exactly.
    A task missing from either step's losses contributes ``delta_i = 0``.

    Options: ``w_lr`` and ``gamma`` (the logits' learning rate and decay); ``min_losses``
    (task -> b_i, default 0; ``L_i - b_i`` is floored at 0 before adding 1e-8);
    ``logits_optimizer``: ``"sgd"`` is Algorithm 1's plain step above, ``"adam"`` is what the
    authors' code and the paper's Appendix C use (``torch.optim.Adam(lr=w_lr,
    weight_decay=gamma)`` on the logits with gradient ``delta``).
    """

    def __init__(self, tasks: Sequence[str], w_lr: float = 0.025, gamma: float = 0.001,
                 min_losses: dict[str, float] | None = None,
                 logits_optimizer: str = "sgd") -> None:
        super().__init__(tasks)
        for name, v, low in (("w_lr", w_lr, "positive"), ("gamma", gamma, "non-negative")):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (v == 0 and low == "positive"):
                raise ConfigError(f"balancer.{name} must be a {low} number, got {v!r}")
        if logits_optimizer not in LOGITS_OPTIMIZERS:
            raise ConfigError(f"balancer.logits_optimizer must be one of "
                              f"{', '.join(LOGITS_OPTIMIZERS)}, got {logits_optimizer!r}")
        min_losses = dict(min_losses or {})
        for t, b in min_losses.items():
            if t not in self.tasks:
                raise ConfigError(f"balancer.min_losses names task '{t}', which the model does "
                                  f"not have (tasks: {', '.join(self.tasks)})")
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                raise ConfigError(f"balancer.min_losses.{t} must be a finite number, got {b!r}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self.logits_optimizer = logits_optimizer
        T = len(self.tasks)
        # From the config, not the checkpoint: not persistent.
        self.register_buffer("min_losses", torch.tensor(
            [float(min_losses.get(t, 0.0)) for t in self.tasks]), persistent=False)
        self.register_buffer("logits", torch.zeros(T))
        self.register_buffer("prev_d", torch.ones(T))  # D_i of the previous step
        self.register_buffer("prev_present", torch.zeros(T, dtype=torch.bool))
        self.register_buffer("adam_m", torch.zeros(T))
        self.register_buffer("adam_v", torch.zeros(T))
        self.register_buffer("adam_step", torch.zeros(()))

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """Update the logits from the previous step's losses to these, then the weights
        ``w_i`` (sum 1 over the tasks in ``losses``). One call per training step."""
        dev = self.logits.device
        one = torch.ones((), device=dev)
        L, present = self.stack_losses(losses, 1.0, dev)
        d = torch.where(present, (L - self.min_losses).clamp_min(0.0) + EPS, one)

        # The logit step for the previous step, branch-free (no host sync): kept only when
        # there was a previous step.
        has_prev = self.prev_present.any()
        delta = torch.where(present & self.prev_present,
                            torch.log(self.prev_d) - torch.log(d), torch.zeros_like(d))
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - (z * delta).sum())  # J^T delta, J = diag(z) - z z^T
        grad = grad + self.gamma * self.logits
        if self.logits_optimizer == "sgd":
            new = self.logits - self.w_lr * grad
        else:
            b1, b2 = ADAM_BETAS
            step = self.adam_step + 1
            m = b1 * self.adam_m + (1 - b1) * grad
            v = b2 * self.adam_v + (1 - b2) * grad * grad
            denom = (v / (1 - b2 ** step)).sqrt() + ADAM_EPS
            new = self.logits - self.w_lr * (m / (1 - b1 ** step)) / denom
            self.adam_m.copy_(torch.where(has_prev, m, self.adam_m))
            self.adam_v.copy_(torch.where(has_prev, v, self.adam_v))
            self.adam_step.copy_(torch.where(has_prev, step, self.adam_step))
        self.logits.copy_(torch.where(has_prev, new, self.logits))

        z = torch.softmax(self.logits, dim=0)
        q = torch.where(present, z / d, torch.zeros_like(z))
        w = q / q.sum()
        self.prev_d.copy_(torch.where(present, d, self.prev_d))
        self.prev_present.copy_(present)
        return {t: w[i] for i, t in enumerate(self.tasks) if t in losses}
