"""GradNorm: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018 (Algorithm 1).

Learnable task weights ``w`` (sum T). Each step, with ``G_i = w_i ||g_i||`` (from the Gram
diagonal), ``L~_i = L_i / L_i(0)`` and the inverse training rates ``r_i = L~_i / mean(L~)``::

    target_i = mean(G) r_i^alpha                       (held constant, as in the paper)
    L_grad   = sum_i |G_i - target_i|,    dL_grad/dw_i = sign(G_i - target_i) ||g_i||
    w       <- w - lr dL_grad/dw,  then renormalised to sum T

The update direction of the step is ``w^T G`` with the weights before this step's change (the
paper updates w after computing the step's gradients). Differences from the paper: ``||g_i||``
is the norm over all shared parameters (mode ``param``) or the shared features (mode
``feature``), not the last shared layer's weights only; w is changed by one plain gradient step
with its own ``lr`` (0.025, the paper's NYUv2 rate; the step scales with the gradient norms, as
the paper's optimizer step on w does) instead of an optimizer; after the step w is floored at
1e-3 so that no weight turns negative (which would ascend that task's loss), then renormalised.
``L_i(0)`` is the first loss seen for each task (buffer); ``L_i(0) <= 0`` counts as 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError

MIN_WEIGHT = 1e-3
MIN_LOSS = 1e-12


def gradnorm_step(gram: Tensor, losses: Tensor, initial_losses: Tensor, weights: Tensor,
                  alpha: float = 1.5, lr: float = 0.025) -> Tensor:
    """The task weights float32[T] after one GradNorm step from ``weights`` [T] (their sum is
    kept), for the Gram matrix ``G G^T``, this step's and the first losses [T]."""
    # One closed-form step: a short fixed chain of small ops on the device (no sync), with the
    # three vectors converted together.
    T = gram.shape[0]
    w, L, L0 = torch.stack([v.detach().reshape(T) for v in (weights, losses, initial_losses)]
                           ).to(torch.float64).unbind(0)
    norms = gram.detach().diagonal().to(torch.float64).clamp_min(0).sqrt()
    ratio = L.clamp_min(0) / L0.clamp_min(MIN_LOSS)
    r = (ratio * (T / ratio.sum())).nan_to_num(nan=1.0)  # all 1 when every ratio is 0
    Gw = w * norms
    target = Gw.sum() / T * r ** alpha
    new = torch.addcmul(w, torch.sign(Gw - target), norms, value=-lr).clamp_min(MIN_WEIGHT)
    return (new * (w.sum() / new.sum())).float()


@register_aggregator("gradnorm")
def gradnorm_weights(gram: Tensor, losses: Tensor | None = None,
                     initial_losses: Tensor | None = None, weights: Tensor | None = None,
                     alpha: float = 1.5, lr: float = 0.025) -> Tensor:
    """Stateless GradNorm: the weights after one step from ``weights`` (ones when None), with
    the losses and first losses [T] (ones when None: every rate 1)."""
    T = gram.shape[0]
    ones = torch.ones(T, device=gram.device)
    return gradnorm_step(gram, ones if losses is None else losses,
                         ones if initial_losses is None else initial_losses,
                         ones if weights is None else weights, alpha, lr)


@BALANCERS.register("gradnorm")
class GradNorm(GradientBalancer):
    """GradNorm (see the module docstring). Options: ``alpha`` (1.5), ``lr`` (0.025). The
    weights and the first losses are buffers."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", alpha: float = 1.5,
                 lr: float = 0.025) -> None:
        super().__init__(tasks, mode)
        for name, v, low in (("alpha", alpha, "non-negative"), ("lr", lr, "positive")):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (v == 0 and low == "positive"):
                raise ConfigError(f"balancer.{name} must be a {low} number, got {v!r}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        T = len(self.tasks)
        self.register_buffer("task_w", torch.ones(T))
        self.register_buffer("initial_losses", torch.ones(T))
        self.register_buffer("has_initial", torch.zeros(T, dtype=torch.bool))

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        rows = self.task_rows(gram.shape[0])
        L = losses.detach().float()
        known = self.gather(self.has_initial, rows)
        L0 = torch.where(known, self.gather(self.initial_losses, rows), L)
        self.scatter(self.initial_losses, rows, L0)
        self.scatter(self.has_initial, rows, torch.ones_like(known))
        w = self.gather(self.task_w, rows).clone()  # the buffer changes below
        self.scatter(self.task_w, rows, gradnorm_step(gram, L, L0, w, self.alpha, self.lr))
        return w
