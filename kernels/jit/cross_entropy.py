"""Triton kernels of ``kernels.cross_entropy`` (formula in that module's docstring);
``ce_block`` is shared with ``kernels.jit.multi_head``."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ce_block(
    logits_ptr, target_ptr, weight_ptr, grad_ptr,
    n, offs_s, mask_s, S, C, ignore_index, one_minus_eps, eps_over_c,
    HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    SINGLE_TILE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Loss of pixels ``offs_s`` of image ``n`` (float32[BLOCK_P], 0 where ignored) and their
    target weights (the mean's denominator terms); stores the unscaled gradient (in
    ``grad_ptr``'s dtype, float32 from ``kernels``)."""
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
def ce_kernel(
    logits_ptr, target_ptr, weight_ptr, grad_ptr, loss_ptr, partial_ptr,
    S, C, ignore_index, one_minus_eps, eps_over_c,
    HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    PER_PIXEL: tl.constexpr, SINGLE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Programs on grid axis 0 only (up to 2^31 - 1; axis 1 allows 65,535): image n, block pid_s.
    pid = tl.program_id(0)
    blocks = tl.cdiv(S, BLOCK_P)
    n = pid // blocks
    pid_s = pid - n * blocks
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
        slot = pid * 2
        tl.store(partial_ptr + slot, tl.sum(loss, 0))
        tl.store(partial_ptr + slot + 1, tl.sum(w_t, 0))
