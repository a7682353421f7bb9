"""Several dense heads' losses on one spatial grid in one kernel launch.

A multi-task model's segmentation and edge heads predict on the same pixels. Instead of one
cross-entropy launch and one BCE launch per edge map (HED has a fused map and a side output
per level), one program takes a block of pixels of one image and computes there the
segmentation cross-entropy (``kernels.cross_entropy``) and the class-balanced BCE of every
edge map (``kernels.edge_bce``), reading each target once. The per-task losses are exactly
those of the single-head functions.
"""

from __future__ import annotations

import torch

from . import INTERPRET, resolve_backend
from ._common import (
    cdiv,
    check_dense_pair,
    check_logits,
    check_reduction,
    grad_dtype,
    jit_module,
    launch,
    needs_grad,
    next_pow2,
    scaled_grad,
)
from .balanced_bce import edge_bce_maps, edge_block_pixels, edge_finish, edge_grad
from .cross_entropy import (
    ce_block_pixels,
    ce_finish,
    ce_grad_scale,
    ce_tile_config,
    cross_entropy_reference,
)


def dense_config(N: int, S: int, C: int | None, K: int | None, interpret: bool = INTERPRET
                 ) -> tuple[bool, int, int, tuple[int]]:
    """(single tile?, BLOCK_C, BLOCK_P, grid) of the kernel for N images of S pixels with C
    segmentation classes and K edge maps (None: no such head): the smaller of the two heads'
    pixel blocks, one program per block of one image, all on grid axis 0."""
    single, block_c = ce_tile_config(C if C is not None else 1)
    block_p = min(ce_block_pixels(S, block_c, interpret) if C is not None else S,
                  edge_block_pixels(S, interpret) if K is not None else S)
    block_p = next_pow2(block_p)
    return single, block_c, block_p, (N * cdiv(S, block_p),)



class _DenseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, seg_x, seg_t, weight, edge_x, edge_t, seg_ignore, edge_ignore,
                label_smoothing, edge_balanced, reduction, seg_grad, edge_grad_on):
        has_seg, has_edge = seg_x is not None, edge_x is not None
        ref = seg_x if has_seg else edge_x
        N, S = ref.shape[0], ref.shape[2]
        C = seg_x.shape[1] if has_seg else 1
        K = edge_x.shape[1] if has_edge else 1
        single, block_c, block_p, grid = dense_config(
            N, S, C if has_seg else None, K if has_edge else None)
        dev = ref.device
        seg_partial = torch.empty((grid[0], 2), device=dev, dtype=torch.float32)
        edge_partial = torch.empty((grid[0], 2 + 2 * K), device=dev, dtype=torch.float32)
        # Float16 gradients are stored in float32 until backward has scaled them (grad_dtype).
        seg_g = edge_g = None
        if has_seg and seg_grad:
            seg_g = torch.empty(seg_x.shape, device=dev, dtype=grad_dtype(seg_x.dtype))
        if has_edge and edge_grad_on:
            edge_g = torch.empty(edge_x.shape, device=dev, dtype=grad_dtype(edge_x.dtype))
        w = None if weight is None else weight.to(device=dev, dtype=torch.float32).contiguous()
        dummy = seg_partial
        launch(
            jit_module("multi_head").dense_kernel, grid, ref,
            seg_x if has_seg else dummy, seg_t if has_seg else dummy,
            w if w is not None else dummy, seg_g if seg_g is not None else dummy, seg_partial,
            edge_x if has_edge else dummy, edge_t if has_edge else dummy,
            edge_g if edge_g is not None else dummy, edge_partial,
            S, C, K, int(seg_ignore), int(edge_ignore),
            1.0 - float(label_smoothing), float(label_smoothing) / C,
            HAS_SEG=has_seg, HAS_EDGE=has_edge, HAS_WEIGHT=w is not None,
            SMOOTH=label_smoothing > 0, SEG_GRAD=seg_g is not None,
            EDGE_GRAD=edge_g is not None, SINGLE_TILE=single, BLOCK_C=block_c, BLOCK_P=block_p,
        )
        seg_loss = edge_loss = None
        saved = []
        if has_seg:
            seg_loss, denom = ce_finish(seg_partial, reduction)
            saved += [seg_g, denom]
        else:
            saved += [None, None]
        if has_edge:
            edge_loss, w_pos, w_neg = edge_finish(edge_partial, N, K, edge_balanced, reduction)
            saved += [edge_g, w_pos, w_neg]
        else:
            saved += [None, None, None]
        ctx.save_for_backward(*saved)
        ctx.reduction = reduction
        ctx.dtypes = (seg_x.dtype if has_seg else None, edge_x.dtype if has_edge else None)
        return seg_loss, edge_loss

    @staticmethod
    def backward(ctx, g_seg, g_edge):
        seg_g, denom, edge_g, w_pos, w_neg = ctx.saved_tensors
        d_seg = d_edge = None
        if seg_g is not None and g_seg is not None:
            d_seg = scaled_grad(seg_g, ce_grad_scale(g_seg, denom, ctx.reduction),
                                ctx.dtypes[0])
        if edge_g is not None and g_edge is not None:
            d_edge = edge_grad(edge_g, w_pos, w_neg, g_edge, ctx.dtypes[1])
        return (d_seg, None, None, d_edge) + (None,) * 8


def dense_losses(
    seg_logits: torch.Tensor | None = None,
    seg_target: torch.Tensor | None = None,
    edge_logits: torch.Tensor | None = None,
    edge_target: torch.Tensor | None = None,
    *,
    seg_weight: torch.Tensor | None = None,
    seg_ignore_index: int = 255,
    label_smoothing: float = 0.0,
    edge_ignore_index: int = 255,
    edge_balanced: bool = True,
    reduction: str = "mean",
    backend: str = "auto",
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The segmentation loss and the K edge maps' losses of heads sharing one grid.

    ``seg_logits`` [N, C, H, W] with ``seg_target`` [N, H, W]: the loss equals
    ``seg_cross_entropy(seg_logits, seg_target, seg_weight, seg_ignore_index,
    label_smoothing, reduction)``. ``edge_logits`` [N, K, H, W] with ``edge_target``
    [N, H, W]: float32[K] whose k-th entry equals ``edge_bce(edge_logits[:, k], edge_target,
    edge_ignore_index, edge_balanced, reduction)``. Either pair may be None (its result is
    None). ``reduction``: ``mean`` or ``sum``. One kernel launch on the Triton backend.
    """
    check_reduction(reduction, ("mean", "sum"))
    has_seg, has_edge = seg_logits is not None, edge_logits is not None
    if not (has_seg or has_edge):
        raise ValueError("dense_losses needs seg_logits or edge_logits")
    if has_seg:
        check_logits(seg_logits, "seg_logits")
        check_dense_pair(seg_logits, seg_target, "seg_logits", "seg_target", "C")
    if has_edge:
        check_logits(edge_logits, "edge_logits")
        check_dense_pair(edge_logits, edge_target, "edge_logits", "edge_target", "K")
    if has_seg and has_edge and seg_target.shape != edge_target.shape:
        raise ValueError(f"seg and edge heads must share one grid: seg target "
                         f"{tuple(seg_target.shape)}, edge target {tuple(edge_target.shape)}")
    if has_seg and seg_weight is not None and seg_weight.shape != (seg_logits.shape[1],):
        raise ValueError(f"seg_weight must have one entry per class ({seg_logits.shape[1]})")
    ref = seg_logits if has_seg else edge_logits
    if resolve_backend(backend, ref) == "torch":
        seg = edge = None
        if has_seg:
            seg = cross_entropy_reference(seg_logits, seg_target, seg_weight, seg_ignore_index,
                                          label_smoothing, reduction)
        if has_edge:
            edge = edge_bce_maps(edge_logits, edge_target, edge_ignore_index, edge_balanced,
                                 reduction, backend="torch")
        return seg, edge
    N = ref.shape[0]
    seg_x = seg_t = edge_x = edge_t = None
    if has_seg:
        seg_x = seg_logits.contiguous().view(N, seg_logits.shape[1], -1)
        seg_t = seg_target.contiguous().view(N, -1)
    if has_edge:
        edge_x = edge_logits.contiguous().view(N, edge_logits.shape[1], -1)
        edge_t = edge_target.contiguous().view(N, -1)
    seg_grad = has_seg and needs_grad(seg_logits)
    edge_grad_on = has_edge and needs_grad(edge_logits)
    return _DenseFn.apply(seg_x, seg_t, seg_weight, edge_x, edge_t, seg_ignore_index,
                          edge_ignore_index, label_smoothing, edge_balanced, reduction,
                          seg_grad, edge_grad_on)
