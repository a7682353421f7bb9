"""Triton kernels for mtvision, one kernel family per file, each beside its plain-PyTorch
reference and its ``autograd.Function``. This package depends on torch and triton only
(never on ``mtvision``).

Backend choice: ``"auto"`` runs Triton for CUDA tensors and the PyTorch reference otherwise;
``"triton"`` on CPU tensors works under ``TRITON_INTERPRET=1`` (how the tests check kernels
against their references on a machine without a GPU). Triton decides between compiling and
interpreting when a kernel is defined, so the variable must be set before ``import kernels``.

Families:
    cross_entropy   ``seg_cross_entropy``: softmax CE over dense or plain logits
    balanced_bce    ``edge_bce``: HED's class-balanced binary cross-entropy
    focal           ``sigmoid_focal_loss``: RetinaNet's focal loss (torchvision's formula)
    multi_head      ``dense_losses``: segmentation CE and K edge maps in one launch
    combine         ``combine_losses``: fixed or uncertainty weighting of the task losses
    gram            ``gram``, ``weighted_rows``, ``graddrop``: the task-gradient matrix
"""

from __future__ import annotations

import importlib.util
import os

import torch

# Read once: the kernels below are compiled or interpreted according to it.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


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
        if not tensor.is_cuda and not (INTERPRET and os.environ.get("TRITON_INTERPRET") == "1"):
            raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1, set "
                               "before kernels is imported")
    return backend


from kernels.cross_entropy import seg_cross_entropy  # noqa: E402

__all__ = ["INTERPRET", "resolve_backend", "seg_cross_entropy", "triton_available"]
from kernels.balanced_bce import edge_bce, edge_bce_maps  # noqa: E402
from kernels.combine import combine_losses  # noqa: E402
from kernels.focal import sigmoid_focal_loss  # noqa: E402
from kernels.multi_head import dense_losses  # noqa: E402

__all__ += ["combine_losses", "dense_losses", "edge_bce", "edge_bce_maps", "sigmoid_focal_loss"]
from kernels.gram import graddrop, gram, weighted_rows  # noqa: E402

__all__ += ["graddrop", "gram", "weighted_rows"]
