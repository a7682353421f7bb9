"""Triton kernel of ``kernels.multi_head``: the blocks of ``kernels.jit.cross_entropy`` and
``kernels.jit.balanced_bce`` run by one program per block of pixels."""

from __future__ import annotations

import triton
import triton.language as tl

from .balanced_bce import edge_block
from .cross_entropy import ce_block


@triton.jit
def dense_kernel(
    seg_ptr, seg_t_ptr, weight_ptr, seg_grad_ptr, seg_partial_ptr,
    edge_ptr, edge_t_ptr, edge_grad_ptr, edge_partial_ptr,
    S, C, K, seg_ignore, edge_ignore, one_minus_eps, eps_over_c,
    HAS_SEG: tl.constexpr, HAS_EDGE: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    SMOOTH: tl.constexpr, SEG_GRAD: tl.constexpr, EDGE_GRAD: tl.constexpr,
    SINGLE_TILE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Programs on grid axis 0 only (up to 2^31 - 1; axis 1 allows 65,535): image n, block pid_s.
    slot = tl.program_id(0)
    blocks = tl.cdiv(S, BLOCK_P)
    n = slot // blocks
    offs_s = (slot - n * blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_s = offs_s < S
    if HAS_SEG:
        loss, w_t = ce_block(
            seg_ptr, seg_t_ptr, weight_ptr, seg_grad_ptr, n, offs_s, mask_s, S, C, seg_ignore,
            one_minus_eps, eps_over_c, HAS_WEIGHT, SMOOTH, SEG_GRAD, SINGLE_TILE, BLOCK_C)
        tl.store(seg_partial_ptr + slot * 2, tl.sum(loss, 0))
        tl.store(seg_partial_ptr + slot * 2 + 1, tl.sum(w_t, 0))
    if HAS_EDGE:
        edge_block(edge_ptr, edge_t_ptr, edge_grad_ptr, edge_partial_ptr, edge_partial_ptr,
                   n, offs_s, mask_s, slot, S, K, edge_ignore, EDGE_GRAD, False)
