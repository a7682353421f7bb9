"""The one place that decides what runs differently on a GPU: which device, and which
autocast dtype. The same code runs on the CPU and on CUDA."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from mtvision.registry import ConfigError

AMP_MODES = ("auto", "bf16", "fp16", "none")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; an unusable device is a ConfigError.

    A CUDA device gets an index and becomes the current device (``torch.cuda.set_device``):
    kernels, cuDNN and allocations that follow the current device then run where the model is,
    so ``--device cuda:1`` trains on GPU 1 instead of reading across devices. Plain ``"cuda"``
    is the local rank's GPU under torchrun, else the current one.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device '{device}': {e}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available")
    index = dev.index
    if index is None:
        torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
        index = int(os.environ.get("LOCAL_RANK", "0")) if torchrun else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ConfigError(f"device '{device}' requested but this machine has {count} CUDA "
                          f"device(s) (cuda:0..cuda:{count - 1})")
    dev = torch.device("cuda", index)
    torch.cuda.set_device(dev)
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA compute capability 8.0 (Ampere)
    or later. ``torch.cuda.is_bf16_supported()`` also counts emulation, under which V100s and
    T4s run bf16 convolutions slowly or not at all."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None: no autocast).

    ``auto``: bf16 where the GPU has it natively (no loss scaling needed), fp16 with a
    GradScaler on older GPUs, nothing on the CPU (CPU autocast is slower than fp32 there).
    """
    if mode not in AMP_MODES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if device.type != "cuda" or mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def tune_cudnn(device: torch.device, deterministic: bool) -> bool:
    """Let cuDNN pick the fastest convolution algorithms on CUDA (training batches are
    letterboxed to one fixed size, so the search runs once); off for deterministic runs.
    Returns whether benchmarking is on."""
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    return torch.backends.cudnn.benchmark


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic``: torch's deterministic algorithms
    (warning where an op has none)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
