"""Helpers shared by the kernel families: argument checks, block sizes and the launch switch."""

from __future__ import annotations

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
