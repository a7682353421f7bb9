"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5),
fused with its gradient; the formula of ``torchvision.ops.sigmoid_focal_loss``::

    p = sigmoid(x),  ce = BCEWithLogits(x, t),  p_t = p t + (1 - p)(1 - t),  q = 1 - p_t
    loss = alpha_t * ce * q^gamma          alpha_t = alpha t + (1 - alpha)(1 - t)  (alpha >= 0)
    dloss/dx = alpha_t * ((p - t) q^gamma - gamma ce q^(gamma - 1) p (1 - p) (2t - 1))

One pass reads logits and targets and writes the loss (per element, or one partial sum per
program) and, when the logits require grad, the gradient (in float32 for float16 logits:
``kernels._common.grad_dtype``); backward only scales it and rounds once to the logits' dtype.
In float16 the gradient of an easy negative (p < 3e-3) is below the smallest subnormal until
the loss scale multiplies it, and would flush to zero; ``kernels.cross_entropy`` gives the cost
and the alternative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import INTERPRET, resolve_backend
from ._common import (
    cdiv,
    check_logits,
    check_reduction,
    grad_dtype,
    jit_module,
    launch,
    needs_grad,
    pixel_block,
    scaled_grad,
)


def sigmoid_focal_loss_reference(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """torchvision's formula on float32 inputs."""
    x, t = logits.float(), targets.float()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_config(M: int, interpret: bool = INTERPRET) -> tuple[int, tuple[int]]:
    """(BLOCK, grid) of the kernel for M elements (M > 0)."""
    block = pixel_block(M, interpret, limit=1024)
    return block, (cdiv(M, block),)


def _launch(x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float, per_element: bool,
            compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    M = x.numel()
    block, grid = focal_config(M)
    out = torch.empty(M if per_element else grid[0], device=x.device, dtype=torch.float32)
    grad = torch.empty(M, device=x.device, dtype=grad_dtype(x.dtype)) if compute_grad else None
    launch(
        jit_module("focal").focal_kernel, grid, x,
        x, t, x if grad is None else grad, out, out, M, float(alpha), float(gamma),
        USE_ALPHA=alpha >= 0, COMPUTE_GRAD=compute_grad, PER_ELEMENT=per_element, BLOCK=block,
    )
    return out, grad


def _reduce(out: torch.Tensor, reduction: str, shape: torch.Size, M: int) -> torch.Tensor:
    if reduction == "none":
        return out.view(shape)
    total = out.sum()
    return total / max(M, 1) if reduction == "mean" else total


class _FocalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma, reduction):
        x, t = logits.contiguous().view(-1), targets.contiguous().view(-1)
        out, grad = _launch(x, t, alpha, gamma, reduction == "none", True)
        ctx.save_for_backward(grad)
        ctx.reduction, ctx.shape, ctx.dtype = reduction, logits.shape, logits.dtype
        return _reduce(out, reduction, logits.shape, x.numel())

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        scale = g.float().reshape(-1)
        if ctx.reduction == "mean":
            scale = scale / max(grad.numel(), 1)
        return scaled_grad(grad, scale, ctx.dtype).view(ctx.shape), None, None, None, None


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    backend: str = "auto",
) -> torch.Tensor:
    """Focal loss of ``logits`` against float ``targets`` of the same shape (values in [0, 1]);
    the value and gradient of ``torchvision.ops.sigmoid_focal_loss`` in float32. ``alpha < 0``
    disables the class balance. Result: float32."""
    check_logits(logits)
    check_reduction(reduction)
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal logits shape "
                         f"{tuple(logits.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if resolve_backend(backend, logits) == "torch":
        return sigmoid_focal_loss_reference(logits, targets, alpha, gamma, reduction)
    if needs_grad(logits):
        return _FocalFn.apply(logits, targets, alpha, gamma, reduction)
    x, t = logits.contiguous().view(-1), targets.contiguous().view(-1)
    out, _ = _launch(x, t, alpha, gamma, reduction == "none", False)
    return _reduce(out, reduction, logits.shape, x.numel())
