"""Helpers shared by the kernel families: argument checks, block sizes, grids and the one
launch path (``launch``) every kernel goes through."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REDUCTIONS = ("mean", "sum", "none")


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {logits.dtype}")


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(allowed)}, got {reduction!r}")


def check_dense_pair(logits: torch.Tensor, target: torch.Tensor | None, logits_name: str,
                     target_name: str, channels: str) -> None:
    """``logits`` [N, channels, *spatial] with ``target`` [N, *spatial], or a ValueError."""
    if logits.dim() < 3 or target is None or tuple(target.shape) != (
            logits.shape[0], *logits.shape[2:]):
        got = None if target is None else tuple(target.shape)
        raise ValueError(f"{logits_name} {tuple(logits.shape)} must be [N, {channels}, *spatial] "
                         f"with {target_name} [N, *spatial], got {got}")


def needs_grad(t: torch.Tensor) -> bool:
    """Whether a forward call must also produce the gradient (evaluation calls do no grad work)."""
    return t.requires_grad and torch.is_grad_enabled()


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def pixel_block(n_pixels: int, interpret: bool, limit: int = 1024) -> int:
    """Pixels per program: large blocks under the interpreter (each program costs a Python
    round), a bandwidth-friendly size on the GPU."""
    if interpret:
        return min(next_pow2(n_pixels), 4096)
    return min(next_pow2(n_pixels), limit)


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 (not NaN) where den is 0: the value of a loss over no labelled pixel."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def grad_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels store dL/dlogits in until backward has scaled it, for logits of
    ``dtype``: float32 for float16, whose range would flush small gradients (focal easy
    negatives, ``sigmoid(x) - y`` far from an edge: below 6e-8) to zero before backward
    multiplies in the loss scale and the mean's 1/n. bfloat16 has float32's exponent range, so
    nothing flushes and its gradient keeps 2 bytes; float32 stays float32."""
    return torch.float32 if dtype == torch.float16 else dtype


def scaled_grad(stored: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``stored * scale`` computed in float32 and rounded once, to ``dtype``. Out of place, so
    a graph kept with retain_graph=True can be walked again; no float32 temporary of the
    gradient's size."""
    scale = scale.float()
    # A scale with as many dims as ``stored`` takes part in type promotion (a 0-dim one would
    # be rounded to a 16-bit ``stored``'s dtype first): the product is formed in float32.
    scale = scale.reshape((1,) * (stored.dim() - scale.dim()) + tuple(scale.shape))
    out = torch.empty(stored.shape, device=stored.device, dtype=dtype)
    return torch.mul(stored, scale, out=out)


# ---------------------------------------------------------------- launching
# CUDA's limits on a launch grid: axis 0 up to 2^31 - 1 blocks, axes 1 and 2 up to 65,535. Every
# kernel here flattens its programs onto axis 0.
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def check_grid(grid: Sequence[int]) -> None:
    """A ValueError naming the axis when ``grid`` exceeds CUDA's limits (not a launch failure)."""
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"a launch grid has 1 to 3 axes, got {tuple(grid)}")
    for axis, (n, limit) in enumerate(zip(grid, GRID_LIMITS[:len(grid)], strict=True)):
        if not 0 <= n <= limit:
            raise ValueError(f"launch grid {tuple(grid)}: axis {axis} has {n} programs, "
                             f"CUDA allows at most {limit}")


def jit_module(family: str) -> ModuleType:
    """``kernels.jit.<family>``, the family's Triton kernels: imported (and with it Triton) on
    the first launch only, so that the package imports where Triton is absent."""
    return importlib.import_module(f"{__package__}.jit.{family}")


def launch_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """The context a launch on ``tensor``'s data runs in: its CUDA device entered (Triton
    launches on the current device, which need not be the tensor's), nothing otherwise."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


def launch(kernel: Any, grid: Sequence[int], tensor: torch.Tensor, *args: Any,
           **meta: Any) -> None:
    """``kernel[grid](*args, **meta)`` on ``tensor``'s device, after checking the grid (an
    empty grid launches nothing)."""
    grid = tuple(int(n) for n in grid)
    check_grid(grid)
    if 0 in grid:
        return
    with launch_device(tensor):
        kernel[grid](*args, **meta)
