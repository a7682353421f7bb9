"""HED's class-balanced binary cross-entropy for edge maps, fused with its gradient.

Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015, eq. 2. For image n, over its
non-ignored pixels, ``beta_n = |Y-_n| / (|Y+_n| + |Y-_n|)``; a positive pixel weighs
``beta_n``, a negative ``1 - beta_n``, an ignored one 0 (without ``balanced`` every
non-ignored pixel weighs 1). ``mean`` divides the weighted sum of the per-pixel
``BCEWithLogits`` by the number of non-ignored pixels in the batch (0 when there are none).

One pass reads the logits and targets and writes, per program, the BCE sums over positive and
negative pixels and their counts, plus the unweighted gradient ``sigmoid(x) - y`` (in float32
for float16 logits: ``kernels._common.grad_dtype``); the weights need the whole image's counts,
so backward applies them and rounds once to the logits' dtype. Float32 because in float16
``sigmoid(x)`` of a confident non-edge pixel (x < -17) would flush to zero before backward
multiplies in the loss scale and the weights; ``kernels.cross_entropy`` gives the cost and the
alternative.
Several maps may share one target (HED's side outputs and fused map): the target is then read
once for all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    pixel_block,
    safe_div,
    scaled_grad,
)


# ---------------------------------------------------------------- PyTorch reference
def edge_weights(target: torch.Tensor, ignore_index: int = 255,
                 balanced: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pixel weight float32 like ``target``, edge indicator float32): HED's weights."""
    valid = target != ignore_index
    pos = valid & (target > 0)
    neg = valid & ~pos
    if not balanced:
        return valid.float(), pos.float()
    dims = tuple(range(1, target.dim()))
    n_pos = pos.sum(dims).float()
    n_neg = neg.sum(dims).float()
    beta = safe_div(n_neg, n_pos + n_neg).reshape(-1, *([1] * (target.dim() - 1)))
    weight = torch.where(pos, beta, torch.where(neg, 1.0 - beta, torch.zeros_like(beta)))
    return weight, pos.float()


def _map_shapes(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, H, W] (from [N, 1, H, W] or [N, H, W]) and target [N, H, W]."""
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.dim() == target.dim() + 1 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.shape != target.shape or target.dim() < 2:
        raise ValueError(f"edge logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                         "must be [N, 1, H, W] or [N, H, W] of one size")
    return logits, target


def edge_bce_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    balanced: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Plain PyTorch: ``binary_cross_entropy_with_logits`` with HED's weights, in float32."""
    x, t = _map_shapes(logits, target)
    weight, y = edge_weights(t, ignore_index, balanced)
    loss = F.binary_cross_entropy_with_logits(x.float(), y, weight=weight, reduction="none")
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return safe_div(total, (t != ignore_index).sum().float())


# ---------------------------------------------------------------- Triton launch
def edge_block_pixels(S: int, interpret: bool = INTERPRET) -> int:
    return pixel_block(S, interpret, limit=1024)


def edge_config(N: int, S: int, interpret: bool = INTERPRET) -> tuple[int, tuple[int]]:
    """(BLOCK_P, grid) of the kernel for N images of S pixels: one program per block of
    BLOCK_P pixels of one image, all on grid axis 0."""
    block_p = edge_block_pixels(S, interpret)
    return block_p, (N * cdiv(S, block_p),)


def edge_finish(partial: torch.Tensor, N: int, K: int, balanced: bool, reduction: str
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From partials [N * blocks, 2 + 2K]: (per-map loss [K], positive and negative pixel
    weights [N] including the mean's normaliser)."""
    p = partial.view(N, -1, 2 + 2 * K).sum(1)  # [N, 2 + 2K]
    n_pos, n_neg = p[:, 0], p[:, 1]
    bce_pos, bce_neg = p[:, 2::2], p[:, 3::2]  # [N, K]
    if balanced:
        beta = safe_div(n_neg, n_pos + n_neg)
        w_pos, w_neg = beta, 1.0 - beta
    else:
        w_pos = w_neg = torch.ones_like(n_pos)
    loss = (w_pos[:, None] * bce_pos + w_neg[:, None] * bce_neg).sum(0)
    if reduction == "mean":
        denom = (n_pos + n_neg).sum()
        loss = safe_div(loss, denom)
        inv = safe_div(torch.ones_like(denom), denom)
        w_pos, w_neg = w_pos * inv, w_neg * inv
    return loss, w_pos, w_neg


def edge_grad(stored: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor,
              g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gradient of ``sum_k g_k loss_k`` in ``dtype`` from the stored ``sigmoid(x) - y``
    [N, K, S].

    The stored value is <= 0 on edge pixels and >= 0 elsewhere, and 0 only where the gradient
    is 0 whatever its weight, so its sign tells which weight applies without reading the
    target again."""
    g = g.float().reshape(1, -1, 1)  # (stored: float32 or bfloat16, see grad_dtype)
    w = torch.where(stored < 0, w_pos[:, None, None] * g, w_neg[:, None, None] * g)
    return scaled_grad(stored, w, dtype)


def edge_launch(
    x: torch.Tensor, t: torch.Tensor, ignore_index: int, per_pixel: bool, compute_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run on logits [N, K, S] and target [N, S]: (partials, unweighted gradient in
    ``grad_dtype`` or None, per-pixel BCE)."""
    N, K, S = x.shape
    block_p, grid = edge_config(N, S)
    partial = torch.empty((grid[0], 2 + 2 * K), device=x.device, dtype=torch.float32)
    gdt = grad_dtype(x.dtype)
    grad = torch.empty(x.shape, device=x.device, dtype=gdt) if compute_grad else None
    loss = torch.empty(x.shape, device=x.device, dtype=torch.float32) if per_pixel else None
    launch(
        jit_module("balanced_bce").edge_bce_kernel, grid, x,
        x, t, x if grad is None else grad, partial if loss is None else loss, partial,
        S, K, int(ignore_index), COMPUTE_GRAD=compute_grad, PER_PIXEL=per_pixel,
        BLOCK_P=block_p,
    )
    return partial, grad, loss


class _EdgeBCEFn(torch.autograd.Function):
    """Losses [K] of the K maps of logits [N, K, S] against one target [N, S]."""

    @staticmethod
    def forward(ctx, x, t, ignore_index, balanced, reduction):
        partial, grad, _ = edge_launch(x, t, ignore_index, False, True)
        loss, w_pos, w_neg = edge_finish(partial, x.shape[0], x.shape[1], balanced, reduction)
        ctx.save_for_backward(grad, w_pos, w_neg)
        ctx.dtype = x.dtype
        return loss

    @staticmethod
    def backward(ctx, g):
        grad, w_pos, w_neg = ctx.saved_tensors
        return edge_grad(grad, w_pos, w_neg, g, ctx.dtype), None, None, None, None


class _EdgeBCEPixelFn(torch.autograd.Function):
    """reduction='none' of one map: per-pixel weighted BCE [N, S]."""

    @staticmethod
    def forward(ctx, x, t, ignore_index, balanced):
        _, grad, loss = edge_launch(x, t, ignore_index, True, True)
        weight, _ = edge_weights(t, ignore_index, balanced)
        ctx.save_for_backward(grad, weight)
        ctx.dtype = x.dtype
        return loss[:, 0] * weight

    @staticmethod
    def backward(ctx, g):
        grad, weight = ctx.saved_tensors
        return scaled_grad(grad, (weight * g.float())[:, None], ctx.dtype), None, None, None


def edge_bce_maps(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    balanced: bool = True,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """``edge_bce`` of each of the K maps of ``logits`` [N, K, H, W] against the one ``target``
    [N, H, W]: float32[K], in one pass over the target (HED's sides and fused map)."""
    check_logits(logits)
    check_reduction(reduction, ("mean", "sum"))
    check_dense_pair(logits, target, "edge logits", "target", "K")
    if resolve_backend(backend, logits) == "torch":
        return torch.stack([
            edge_bce_reference(logits[:, k], target, ignore_index, balanced, reduction)
            for k in range(logits.shape[1])
        ])
    N, K = logits.shape[:2]
    x = logits.contiguous().view(N, K, -1)
    t = target.contiguous().view(N, -1)
    if needs_grad(logits):
        return _EdgeBCEFn.apply(x, t, ignore_index, balanced, reduction)
    partial, _, _ = edge_launch(x, t, ignore_index, False, False)
    return edge_finish(partial, N, K, balanced, reduction)[0]


def edge_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    balanced: bool = True,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """HED's class-balanced BCE of edge logits ``[N, 1, H, W]`` or ``[N, H, W]`` against a
    target of 0, 1 and ``ignore_index`` of the same size (see the module docstring).
    Result: float32 (per pixel [N, H, W] for ``none``)."""
    check_logits(logits)
    check_reduction(reduction)
    x, t = _map_shapes(logits, target)
    if resolve_backend(backend, logits) == "torch":
        return edge_bce_reference(x, t, ignore_index, balanced, reduction)
    if reduction != "none":
        return edge_bce_maps(x[:, None], t, ignore_index, balanced, reduction, backend)[0]
    N = x.shape[0]
    xf = x.contiguous().view(N, 1, -1)
    tf = t.contiguous().view(N, -1)
    if needs_grad(logits):
        return _EdgeBCEPixelFn.apply(xf, tf, ignore_index, balanced).view(t.shape)
    _, _, loss = edge_launch(xf, tf, ignore_index, True, False)
    return (loss[:, 0] * edge_weights(tf, ignore_index, balanced)[0]).view(t.shape)
