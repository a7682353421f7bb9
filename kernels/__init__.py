"""Triton kernels for mtvision, one kernel family per file, each beside its plain-PyTorch
reference and its ``autograd.Function``. This package depends on torch and triton only
(never on ``mtvision``).

Backend choice: ``"auto"`` runs Triton for CUDA tensors and the PyTorch reference otherwise;
``"triton"`` on CPU tensors works under ``TRITON_INTERPRET=1`` (how the tests check kernels
against their references on a machine without a GPU).
"""

from __future__ import annotations

import importlib.util
import os

import torch


def triton_available() -> bool:
    """Whether Triton is importable at all."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for ``tensor`` given the requested ``backend``."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' but triton is not installed")
        if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1")
    return backend
