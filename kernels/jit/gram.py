"""Triton kernels of ``kernels.gram`` (the task-gradient matrix; see that module's
docstring)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gram_kernel(
    g_ptr, partial_ptr, T, P, stride_t, chunks_per_program,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, T_PAD: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_t = tl.arange(0, T_PAD)
    mask_t = offs_t < T
    rows = g_ptr + offs_t.to(tl.int64)[:, None] * stride_t
    offs_k = tl.arange(0, BLOCK_P)
    first = pid.to(tl.int64) * chunks_per_program * BLOCK_P
    acc = tl.zeros((T_PAD, T_PAD), dtype=tl.float32)
    for k in range(0, chunks_per_program):
        offs_p = first + k * BLOCK_P + offs_k
        m2 = mask_t[:, None] & (offs_p < P)[None, :]
        tile = tl.load(rows + offs_p[None, :], mask=m2, other=0.0)
        if UPCAST:
            tile = tile.to(tl.float32)
        acc = tl.dot(tile, tl.trans(tile), acc, input_precision=PRECISION)
    out = partial_ptr + pid.to(tl.int64) * T * T + offs_t[:, None] * T + offs_t[None, :]
    tl.store(out, acc, mask=mask_t[:, None] & mask_t[None, :])


@triton.jit
def column_tile(g_ptr, T, P, stride_t, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's [BLOCK_T, BLOCK_P] tile of G in float32 (0 outside G), with its row and
    column offsets and masks: the one read of G of the per-column kernels."""
    offs_p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    offs_t = tl.arange(0, BLOCK_T)
    mask_t = offs_t < T
    ptrs = g_ptr + offs_t.to(tl.int64)[:, None] * stride_t + offs_p[None, :]
    g = tl.load(ptrs, mask=mask_t[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
    return g, offs_t, mask_t, offs_p, mask_p


@triton.jit
def weighted_rows_kernel(
    g_ptr, w_ptr, out_ptr, T, P, stride_t, stride_out,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):
    g, offs_t, mask_t, offs_p, mask_p = column_tile(g_ptr, T, P, stride_t, BLOCK_T, BLOCK_P)
    w = tl.load(w_ptr + offs_t, mask=mask_t, other=0.0).to(tl.float32)
    r = tl.sum(w[:, None] * g, 0)
    tl.store(out_ptr + offs_p * stride_out, r.to(out_ptr.dtype.element_ty), mask=mask_p)


@triton.jit
def graddrop_kernel(
    g_ptr, u_ptr, out_ptr, T, P, stride_t, eps,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):
    g, offs_t, mask_t, offs_p, mask_p = column_tile(g_ptr, T, P, stride_t, BLOCK_T, BLOCK_P)
    total = tl.sum(g, 0)
    mass = tl.sum(tl.abs(g), 0)
    # div_rn: IEEE-rounded like torch's division, so u_j lands on the same side of purity_j.
    purity = 0.5 * (1.0 + tl.math.div_rn(total, mass + eps))
    u = tl.load(u_ptr + offs_p, mask=mask_p, other=0.0)
    keep = (((u < purity)[None, :] & (g > 0.0))
            | ((u > purity)[None, :] & (g < 0.0)))
    r = tl.sum(tl.where(keep, g, 0.0), 0)
    tl.store(out_ptr + offs_p, r, mask=mask_p)
