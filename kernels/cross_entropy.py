"""Softmax cross-entropy over dense (or plain) class logits, fused with its gradient.

PyTorch's ``cross_entropy`` on ``[N, C, H, W]`` logits writes the log-probabilities, reads them
for the NLL, keeps them for backward, and backward writes a one-hot gradient and reads both
again. Here one pass over the logits and targets gives the loss and, when the logits require
grad, the gradient ``dL/dlogits`` up to the scalar (or per-pixel) factor that only backward
knows: backward multiplies once and rounds once to the logits' dtype.

For float16 logits the stored gradient is float32 (``kernels._common.grad_dtype``): in float16
the ``p`` of a class far below the best (``p < 6e-8``) would flush to zero before backward
multiplies in the loss scale and the mean's 1/n, exactly what GradScaler exists to prevent.
bfloat16 (float32's exponent range) and float32 logits store their own dtype. The cost, float16
only: 4 bytes per logit held until backward instead of 2 (autocast's float32 ``F.cross_entropy``
holds float32 log-probabilities too) and 4 more bytes moved per logit. Recomputing the gradient
in backward from the saved logits would hold and move less, but needs a second kernel per
family and a second read of the targets; the float32 store keeps one kernel and a backward that
is one multiply.

Per pixel i with target t, weights w (1 without ``weight``), smoothing e and C classes::

    loss_i = (1 - e) w_t (lse - x_t) + e / C * sum_c w_c (lse - x_c)
    grad_i = (1 - e) w_t (p - onehot_t) + e / C * (p * sum_c w_c - w)        p = softmax(x)

``mean`` divides the sum by ``sum_i w_{t_i}`` over non-ignored pixels (PyTorch's weighted
mean), 0 when every pixel is ignored. A target outside ``[0, C)`` that is not ``ignore_index``
makes that pixel's loss NaN on the Triton path (no host sync to raise); the reference path
raises as PyTorch does.
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
    next_pow2,
    pixel_block,
    safe_div,
    scaled_grad,
)

# Classes handled in one register tile: up to this many, the logits are read exactly once.
SINGLE_TILE_CLASSES = 64
LOOP_BLOCK_C = 32


# ---------------------------------------------------------------- PyTorch reference
def cross_entropy_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``F.cross_entropy`` in float32, except that ``mean`` over no labelled pixel is 0."""
    x = logits.float()
    w = None if weight is None else weight.to(device=x.device, dtype=torch.float32)
    kw = dict(weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if reduction != "mean":
        return F.cross_entropy(x, target, reduction=reduction, **kw)
    total = F.cross_entropy(x, target, reduction="sum", **kw)
    valid = target != ignore_index
    if w is None:
        denom = valid.sum().to(total.dtype)
    else:
        idx = torch.where(valid, target, torch.zeros_like(target))
        denom = torch.where(valid, w[idx], torch.zeros_like(w[idx])).sum()
    return safe_div(total, denom)


# ---------------------------------------------------------------- Triton launch
def ce_tile_config(C: int) -> tuple[bool, int]:
    """(single tile?, BLOCK_C) for C classes."""
    if C <= SINGLE_TILE_CLASSES:
        return True, next_pow2(C)
    return False, LOOP_BLOCK_C


def ce_block_pixels(S: int, block_c: int, interpret: bool = INTERPRET) -> int:
    # About 4K float32 values in registers per program on the GPU.
    return pixel_block(S, interpret, limit=max(16, 4096 // block_c))


def ce_config(N: int, C: int, S: int, interpret: bool = INTERPRET
              ) -> tuple[bool, int, int, tuple[int]]:
    """(single tile?, BLOCK_C, BLOCK_P, grid) of the kernel for [N, C, S] logits: one program
    per block of BLOCK_P pixels of one image, all on grid axis 0."""
    single, block_c = ce_tile_config(C)
    block_p = ce_block_pixels(S, block_c, interpret)
    return single, block_c, block_p, (N * cdiv(S, block_p),)


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C, S] logits and [N, S] targets, contiguous (a deliberate copy for strided input)."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be [N, C] or [N, C, *spatial], got {tuple(logits.shape)}")
    N, C = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    if tuple(target.shape) != (N, *spatial):
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits "
                         f"{tuple(logits.shape)} (expected {(N, *spatial)})")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class ids, got {target.dtype}")
    S = 1
    for d in spatial:
        S *= d
    return logits.contiguous().view(N, C, S), target.contiguous().view(N, S)


def ce_launch(
    x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
    label_smoothing: float, per_pixel: bool, compute_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel on [N, C, S] / [N, S]: (per-pixel loss [N, S] or per-program partials
    [P, 2], the unscaled gradient in ``grad_dtype`` or None)."""
    N, C, S = x.shape
    single, block_c, block_p, grid = ce_config(N, C, S)
    # x: an unused pointer when no gradient is stored.
    grad = torch.empty(x.shape, device=x.device, dtype=grad_dtype(x.dtype)) if compute_grad else x
    if per_pixel:
        out = torch.empty((N, S), device=x.device, dtype=torch.float32)
        partial = out
    else:
        partial = torch.empty((grid[0], 2), device=x.device, dtype=torch.float32)
        out = partial
    w = x if weight is None else weight.to(device=x.device, dtype=torch.float32).contiguous()
    launch(
        jit_module("cross_entropy").ce_kernel, grid, x,
        x, t, w, grad, out, partial, S, C, int(ignore_index),
        1.0 - float(label_smoothing), float(label_smoothing) / C,
        HAS_WEIGHT=weight is not None, SMOOTH=label_smoothing > 0, COMPUTE_GRAD=compute_grad,
        PER_PIXEL=per_pixel, SINGLE_TILE=single, BLOCK_C=block_c, BLOCK_P=block_p,
    )
    return out, (grad if compute_grad else None)


def ce_finish(partial: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, denominator) from the per-program partials."""
    total = partial.sum(0)
    if reduction == "sum":
        return total[0], torch.ones((), device=partial.device)
    return safe_div(total[0], total[1]), total[1]


def ce_grad_scale(g: torch.Tensor, denom: torch.Tensor, reduction: str) -> torch.Tensor:
    """The factor backward multiplies the stored gradient by."""
    if reduction == "mean":
        return safe_div(g.float(), denom)
    return g.float()


class _CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, label_smoothing, reduction):
        x, t = _flatten(logits, target)
        per_pixel = reduction == "none"
        out, grad = ce_launch(x, t, weight, ignore_index, label_smoothing, per_pixel, True)
        if per_pixel:
            loss, denom = out.view(target.shape), torch.ones((), device=x.device)
        else:
            loss, denom = ce_finish(out, reduction)
        ctx.save_for_backward(grad, denom)
        ctx.reduction, ctx.shape, ctx.dtype = reduction, logits.shape, logits.dtype
        return loss

    @staticmethod
    def backward(ctx, g):
        grad, denom = ctx.saved_tensors
        if ctx.reduction == "none":
            scale = g.float().reshape(grad.shape[0], 1, grad.shape[2])
        else:
            scale = ce_grad_scale(g, denom, ctx.reduction)
        return scaled_grad(grad, scale, ctx.dtype).view(ctx.shape), None, None, None, None, None


def seg_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Cross-entropy of logits ``[N, C, *spatial]`` (or ``[N, C]``) against integer targets
    ``[N, *spatial]``; the value and gradient of ``F.cross_entropy`` on float32 inputs with the
    same arguments, except that ``mean`` over no labelled pixel is 0. Result: float32.

    ``backend``: ``"auto"`` (Triton for CUDA tensors), ``"triton"`` or ``"torch"``.
    """
    check_logits(logits)
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have one entry per class ({logits.shape[1]}), "
                         f"got shape {tuple(weight.shape)}")
    if resolve_backend(backend, logits) == "torch":
        return cross_entropy_reference(logits, target, weight, ignore_index, label_smoothing,
                                       reduction)
    if needs_grad(logits):
        return _CrossEntropyFn.apply(logits, target, weight, ignore_index, label_smoothing,
                                     reduction)
    x, t = _flatten(logits, target)
    out, _ = ce_launch(x, t, weight, ignore_index, label_smoothing, reduction == "none", False)
    return out.view(target.shape) if reduction == "none" else ce_finish(out, reduction)[0]
