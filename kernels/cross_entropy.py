"""Softmax cross-entropy over dense (or plain) class logits, fused with its gradient.

PyTorch's ``cross_entropy`` on ``[N, C, H, W]`` logits writes the log-probabilities, reads them
for the NLL, keeps them for backward, and backward writes a one-hot gradient and reads both
again. Here one pass over the logits and targets gives the loss and, when the logits require
grad, the gradient ``dL/dlogits`` up to the scalar (or per-pixel) factor that only backward
knows: backward multiplies once.

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
import triton
import triton.language as tl

from kernels import INTERPRET, resolve_backend
from kernels._common import (
    check_logits,
    check_reduction,
    needs_grad,
    next_pow2,
    pixel_block,
    safe_div,
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


# ---------------------------------------------------------------- Triton
@triton.jit
def ce_block(
    logits_ptr, target_ptr, weight_ptr, grad_ptr,
    n, offs_s, mask_s, S, C, ignore_index, one_minus_eps, eps_over_c,
    HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    SINGLE_TILE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Loss of pixels ``offs_s`` of image ``n`` (float32[BLOCK_P], 0 where ignored) and their
    target weights (the mean's denominator terms); stores the unscaled gradient."""
    row = n.to(tl.int64) * C * S
    t = tl.load(target_ptr + n.to(tl.int64) * S + offs_s, mask=mask_s, other=ignore_index)
    t = t.to(tl.int32)
    valid = mask_s & (t != ignore_index)
    in_range = (t >= 0) & (t < C)
    if HAS_WEIGHT:
        w_t = tl.load(weight_ptr + t, mask=valid & in_range, other=0.0).to(tl.float32)
    else:
        w_t = tl.where(valid, 1.0, 0.0)
    offs_c = tl.arange(0, BLOCK_C)
    if SINGLE_TILE:
        cmask = offs_c < C
        m2 = cmask[:, None] & mask_s[None, :]
        ptrs = logits_ptr + row + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        x = tl.load(ptrs, mask=m2, other=float("-inf")).to(tl.float32)
        mx = tl.max(x, 0)
        mx = tl.where(mask_s, mx, 0.0)
        xs = x - mx[None, :]  # <= 0: sums of shifted logits cannot cancel catastrophically
        se = tl.sum(tl.exp(xs), 0)
        is_t = (offs_c[:, None] == t[None, :]) & m2
        xs_t = tl.sum(tl.where(is_t, xs, 0.0), 0)
        if HAS_WEIGHT:
            w_c = tl.load(weight_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
        else:
            w_c = tl.where(cmask, 1.0, 0.0)
        w_sum = tl.sum(w_c, 0)
        if SMOOTH:
            wxs = tl.sum(w_c[:, None] * tl.where(m2, xs, 0.0), 0)
    else:
        m = tl.full(mask_s.shape, float("-inf"), tl.float32)
        se = tl.zeros(mask_s.shape, tl.float32)
        xs_t = tl.zeros(mask_s.shape, tl.float32)
        wxs = tl.zeros(mask_s.shape, tl.float32)
        w_seen = tl.zeros(mask_s.shape, tl.float32)
        x_t = tl.zeros(mask_s.shape, tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            cmask = cc < C
            m2 = cmask[:, None] & mask_s[None, :]
            ptrs = logits_ptr + row + cc[:, None].to(tl.int64) * S + offs_s[None, :]
            x = tl.load(ptrs, mask=m2, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            m_new = tl.where(mask_s, m_new, 0.0)
            # Running sums are kept relative to the running max (online softmax).
            shift = tl.where(m == float("-inf"), 0.0, m - m_new)
            se = se * tl.exp(shift) + tl.sum(tl.exp(x - m_new[None, :]), 0)
            x_t += tl.sum(tl.where((cc[:, None] == t[None, :]) & m2, x, 0.0), 0)
            if SMOOTH:
                if HAS_WEIGHT:
                    w_c = tl.load(weight_ptr + cc, mask=cmask, other=0.0).to(tl.float32)
                else:
                    w_c = tl.where(cmask, 1.0, 0.0)
                wxs = wxs + w_seen * shift + tl.sum(
                    w_c[:, None] * tl.where(m2, x - m_new[None, :], 0.0), 0)
                w_seen += tl.sum(w_c, 0)
            m = m_new
        mx = m
        xs_t = x_t - mx
        if HAS_WEIGHT:
            w_sum = tl.zeros(mask_s.shape, tl.float32)
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                w_sum += tl.sum(tl.load(weight_ptr + cc, mask=cc < C, other=0.0).to(tl.float32), 0)
        else:
            w_sum = tl.zeros(mask_s.shape, tl.float32) + C
    lse = tl.log(tl.where(mask_s, se, 1.0))  # relative to mx
    loss = one_minus_eps * w_t * (lse - xs_t)
    if SMOOTH:
        loss += eps_over_c * (w_sum * lse - wxs)
    loss = tl.where(valid, loss, 0.0)
    loss = tl.where(valid & ~in_range, float("nan"), loss)

    if COMPUTE_GRAD:
        if SINGLE_TILE:
            p = tl.exp(xs - lse[None, :])
            g = one_minus_eps * w_t[None, :] * (p - tl.where(is_t, 1.0, 0.0))
            if SMOOTH:
                g += eps_over_c * (p * w_sum - w_c[:, None])
            g = tl.where(valid[None, :], g, 0.0)
            tl.store(grad_ptr + row + offs_c[:, None].to(tl.int64) * S + offs_s[None, :],
                     g.to(grad_ptr.dtype.element_ty), mask=m2)
        else:
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                cmask = cc < C
                m2 = cmask[:, None] & mask_s[None, :]
                off = row + cc[:, None].to(tl.int64) * S + offs_s[None, :]
                x = tl.load(logits_ptr + off, mask=m2, other=float("-inf")).to(tl.float32)
                p = tl.exp(x - mx[None, :] - lse[None, :])
                g = one_minus_eps * w_t[None, :] * (
                    p - tl.where(cc[:, None] == t[None, :], 1.0, 0.0))
                if SMOOTH:
                    if HAS_WEIGHT:
                        w_c = tl.load(weight_ptr + cc, mask=cmask, other=0.0).to(tl.float32)
                    else:
                        w_c = tl.where(cmask, 1.0, 0.0)
                    g += eps_over_c * (p * w_sum - w_c[:, None])
                g = tl.where(valid[None, :], g, 0.0)
                tl.store(grad_ptr + off, g.to(grad_ptr.dtype.element_ty), mask=m2)
    return loss, w_t


@triton.jit
def _ce_kernel(
    logits_ptr, target_ptr, weight_ptr, grad_ptr, loss_ptr, partial_ptr,
    S, C, ignore_index, one_minus_eps, eps_over_c,
    HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    PER_PIXEL: tl.constexpr, SINGLE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_s = pid_s * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_s = offs_s < S
    loss, w_t = ce_block(
        logits_ptr, target_ptr, weight_ptr, grad_ptr, n, offs_s, mask_s, S, C, ignore_index,
        one_minus_eps, eps_over_c, HAS_WEIGHT, SMOOTH, COMPUTE_GRAD, SINGLE_TILE, BLOCK_C)
    if PER_PIXEL:
        tl.store(loss_ptr + n.to(tl.int64) * S + offs_s, loss, mask=mask_s)
    else:
        # One (loss sum, weight sum) pair per program, reduced afterwards in a fixed order:
        # deterministic, unlike atomics.
        slot = (n * tl.num_programs(1) + pid_s) * 2
        tl.store(partial_ptr + slot, tl.sum(loss, 0))
        tl.store(partial_ptr + slot + 1, tl.sum(w_t, 0))


def ce_tile_config(C: int) -> tuple[bool, int]:
    """(single tile?, BLOCK_C) for C classes."""
    if C <= SINGLE_TILE_CLASSES:
        return True, next_pow2(C)
    return False, LOOP_BLOCK_C


def ce_block_pixels(S: int, block_c: int) -> int:
    # About 4K float32 values in registers per program on the GPU.
    return pixel_block(S, INTERPRET, limit=max(16, 4096 // block_c))


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
    [P, 2], the unscaled gradient or None)."""
    N, C, S = x.shape
    single, block_c = ce_tile_config(C)
    block_p = ce_block_pixels(S, block_c)
    grid = (N, triton.cdiv(S, block_p))
    grad = torch.empty_like(x) if compute_grad else x  # x: an unused pointer when not stored
    if per_pixel:
        out = torch.empty((N, S), device=x.device, dtype=torch.float32)
        partial = out
    else:
        partial = torch.empty((grid[0] * grid[1], 2), device=x.device, dtype=torch.float32)
        out = partial
    w = x if weight is None else weight.to(device=x.device, dtype=torch.float32).contiguous()
    _ce_kernel[grid](
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
        ctx.reduction, ctx.shape = reduction, logits.shape
        return loss

    @staticmethod
    def backward(ctx, g):
        grad, denom = ctx.saved_tensors
        if ctx.reduction == "none":
            scale = g.float().reshape(grad.shape[0], 1, grad.shape[2])
        else:
            scale = ce_grad_scale(g, denom, ctx.reduction)
        # Out of place, so that a graph kept with retain_graph=True can be walked again.
        return (grad * scale).to(grad.dtype).view(ctx.shape), None, None, None, None, None


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
