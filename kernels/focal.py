"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5),
fused with its gradient; the formula of ``torchvision.ops.sigmoid_focal_loss``::

    p = sigmoid(x),  ce = BCEWithLogits(x, t),  p_t = p t + (1 - p)(1 - t),  q = 1 - p_t
    loss = alpha_t * ce * q^gamma          alpha_t = alpha t + (1 - alpha)(1 - t)  (alpha >= 0)
    dloss/dx = alpha_t * ((p - t) q^gamma - gamma ce q^(gamma - 1) p (1 - p) (2t - 1))

One pass reads logits and targets and writes the loss (per element, or one partial sum per
program) and, when the logits require grad, the gradient; backward only scales it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import INTERPRET, resolve_backend
from kernels._common import check_logits, check_reduction, needs_grad, pixel_block


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


@triton.jit
def _focal_kernel(
    x_ptr, t_ptr, grad_ptr, loss_ptr, partial_ptr, M, alpha, gamma,
    USE_ALPHA: tl.constexpr, COMPUTE_GRAD: tl.constexpr, PER_ELEMENT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    e = tl.exp(-tl.abs(x))
    p = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    ce = tl.maximum(x, 0.0) - x * t + tl.log(1.0 + e)
    q = 1.0 - (p * t + (1.0 - p) * (1.0 - t))
    # q^gamma through exp2/log2 with q floored at 1e-30: q = 0 then gives 0 (or 1 for gamma = 0,
    # as 0 ** 0 in PyTorch) without log2(0) = -inf, and the floor's error is below float32's.
    lq = tl.log2(tl.maximum(q, 1e-30))
    qg = tl.exp2(gamma * lq)
    loss = ce * qg
    if USE_ALPHA:
        a_t = alpha * t + (1.0 - alpha) * (1.0 - t)
        loss = a_t * loss
    if PER_ELEMENT:
        tl.store(loss_ptr + offs, loss, mask=mask)
    else:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), 0))
    if COMPUTE_GRAD:
        # Where q = 0 with hard targets, p (1 - p) = 0 too, so the floored q^(gamma-1) is
        # harmless even for gamma < 1.
        qg1 = tl.exp2((gamma - 1.0) * lq)
        d_focal = gamma * qg1 * p * (1.0 - p) * (2.0 * t - 1.0)
        g = (p - t) * qg - ce * d_focal
        if USE_ALPHA:
            g = a_t * g
        tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)


def _launch(x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float, per_element: bool,
            compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    M = x.numel()
    block = pixel_block(M, INTERPRET, limit=1024)
    grid = (triton.cdiv(M, block),)
    out = torch.empty(M if per_element else grid[0], device=x.device, dtype=torch.float32)
    grad = torch.empty_like(x) if compute_grad else None
    _focal_kernel[grid](
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
        ctx.reduction, ctx.shape = reduction, logits.shape
        return _reduce(out, reduction, logits.shape, x.numel())

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        scale = g.float().reshape(-1)
        if ctx.reduction == "mean":
            scale = scale / max(grad.numel(), 1)
        return (grad * scale).to(grad.dtype).view(ctx.shape), None, None, None, None


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
