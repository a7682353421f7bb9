"""Choosing the device: the same code runs on the CPU and on CUDA."""

from __future__ import annotations

import torch

from mtvision.registry import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; an unusable device is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device '{device}': {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available")
    return dev
