"""Triton kernels of ``kernels.balanced_bce`` (HED's loss, see that module's docstring);
``edge_block`` is shared with ``kernels.jit.multi_head``."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def edge_block(
    logits_ptr, target_ptr, grad_ptr, loss_ptr, partial_ptr,
    n, offs_s, mask_s, slot, S, K, ignore_index,
    COMPUTE_GRAD: tl.constexpr, PER_PIXEL: tl.constexpr,
):
    """Pixels ``offs_s`` of image ``n`` for the K maps of ``logits`` [N, K, S] sharing the
    target [N, S]: writes ``partial[slot] = [n_pos, n_neg, bce_pos_0, bce_neg_0, ...]``."""
    t = tl.load(target_ptr + n.to(tl.int64) * S + offs_s, mask=mask_s, other=ignore_index)
    t = t.to(tl.int32)
    valid = mask_s & (t != ignore_index)
    pos = valid & (t > 0)
    neg = valid & (t <= 0)
    y = tl.where(pos, 1.0, 0.0)
    base = slot * (2 + 2 * K)
    tl.store(partial_ptr + base, tl.sum(y, 0))
    tl.store(partial_ptr + base + 1, tl.sum(tl.where(neg, 1.0, 0.0), 0))
    for k in range(K):
        off = (n.to(tl.int64) * K + k) * S + offs_s
        x = tl.load(logits_ptr + off, mask=mask_s, other=0.0).to(tl.float32)
        e = tl.exp(-tl.abs(x))
        bce = tl.maximum(x, 0.0) - x * y + tl.log(1.0 + e)
        tl.store(partial_ptr + base + 2 + 2 * k, tl.sum(tl.where(pos, bce, 0.0), 0))
        tl.store(partial_ptr + base + 3 + 2 * k, tl.sum(tl.where(neg, bce, 0.0), 0))
        if PER_PIXEL:
            tl.store(loss_ptr + off, tl.where(valid, bce, 0.0), mask=mask_s)
        if COMPUTE_GRAD:
            sig = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            g = tl.where(valid, sig - y, 0.0)
            tl.store(grad_ptr + off, g.to(grad_ptr.dtype.element_ty), mask=mask_s)


@triton.jit
def edge_bce_kernel(
    logits_ptr, target_ptr, grad_ptr, loss_ptr, partial_ptr, S, K, ignore_index,
    COMPUTE_GRAD: tl.constexpr, PER_PIXEL: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Programs on grid axis 0 only (up to 2^31 - 1; axis 1 allows 65,535): image n, block pid_s.
    pid = tl.program_id(0)
    blocks = tl.cdiv(S, BLOCK_P)
    n = pid // blocks
    offs_s = (pid - n * blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    edge_block(logits_ptr, target_ptr, grad_ptr, loss_ptr, partial_ptr, n, offs_s, offs_s < S,
               pid, S, K, ignore_index, COMPUTE_GRAD, PER_PIXEL)
