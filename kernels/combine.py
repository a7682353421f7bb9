"""The weighted combination of task losses in one launch, with its gradient.

``total = sum_i w_i L_i`` (fixed weights), or with learned log-variances ``s_i = log sigma_i^2``
the uncertainty weighting of Kendall, Gal & Cipolla ("Multi-Task Learning Using Uncertainty to
Weigh Losses for Scene Geometry and Semantics", CVPR 2018, eq. 7)::

    total = sum_i w_i (0.5 exp(-s_i) L_i + 0.5 s_i)     i.e.  L_i / (2 sigma_i^2) + log sigma_i

One program reads the T losses (and weights, log-variances) and writes the total and both
gradients; backward only scales them by the incoming gradient. Instead of 3T small launches
(multiply, exp, add per task) there is one.
"""

from __future__ import annotations

import torch

from . import resolve_backend
from ._common import jit_module, launch, next_pow2


def combine_config(T: int) -> tuple[int, tuple[int]]:
    """(BLOCK, grid) of the kernel for T losses: one program holds them all."""
    return next_pow2(T), (1,)



def combine_losses_reference(losses: torch.Tensor, weights: torch.Tensor | None = None,
                             log_vars: torch.Tensor | None = None) -> torch.Tensor:
    """The plain formula in float32."""
    L = losses.float()
    w = torch.ones_like(L) if weights is None else weights.to(L)
    if log_vars is None:
        return (w * L).sum()
    s = log_vars.float()
    return (w * (0.5 * torch.exp(-s) * L + 0.5 * s)).sum()


class _CombineFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, losses, weights, log_vars):
        T = losses.numel()
        dev = losses.device
        out = torch.empty((), device=dev, dtype=torch.float32)
        dl = torch.empty(T, device=dev, dtype=torch.float32)
        ds = torch.empty(T, device=dev, dtype=torch.float32) if log_vars is not None else dl
        block, grid = combine_config(T)
        launch(
            jit_module("combine").combine_kernel, grid, losses,
            losses.contiguous(), out if weights is None else weights.contiguous(),
            out if log_vars is None else log_vars.contiguous(), out, dl, ds, T,
            HAS_W=weights is not None, UNCERTAINTY=log_vars is not None,
            BLOCK=block,
        )
        ctx.save_for_backward(dl, ds if log_vars is not None else None)
        ctx.dtypes = (losses.dtype, None if log_vars is None else log_vars.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        dl, ds = ctx.saved_tensors
        d_losses = (dl * g).to(ctx.dtypes[0])
        d_logvars = None if ds is None else (ds * g).to(ctx.dtypes[1])
        return d_losses, None, d_logvars


def combine_losses(
    losses: torch.Tensor,
    weights: torch.Tensor | None = None,
    log_vars: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The total of the task losses ``losses`` [T] with constant ``weights`` [T] (default 1)
    and, when given, learned log-variances ``log_vars`` [T] (uncertainty weighting); see the
    module docstring. Differentiable in ``losses`` and ``log_vars``. Result: float32 scalar."""
    if losses.dim() != 1:
        raise ValueError(f"losses must be a 1-D tensor of task losses, got {tuple(losses.shape)}")
    for name, v in (("weights", weights), ("log_vars", log_vars)):
        if v is not None and v.shape != losses.shape:
            raise ValueError(f"{name} must have shape {tuple(losses.shape)}, got {tuple(v.shape)}")
    if weights is not None:
        weights = weights.detach()  # constants: a method that learns weights uses log_vars
    if resolve_backend(backend, losses) == "torch":
        return combine_losses_reference(losses, weights, log_vars)
    return _CombineFn.apply(losses, weights, log_vars)
