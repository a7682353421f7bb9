"""Triton kernel of ``kernels.focal`` (formula and gradient in that module's docstring)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def focal_kernel(
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
