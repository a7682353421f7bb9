"""Fused loss and gradient-balancing kernels for mtvision, one kernel family per file, each
beside its plain-PyTorch reference and its ``autograd.Function``; the ``@triton.jit`` kernels of
each family live in ``kernels.jit.<family>``. This package depends on torch (and, for the
Triton backend only, triton), never on ``mtvision``.

What runs where:
    Linux + CUDA with Triton   CUDA tensors run the Triton kernels (``backend="auto"``).
    CPU tensors, any platform  the PyTorch reference, silently (``"auto"``); Triton is never
                               imported, so CPU-only, macOS and Windows installs need no Triton.
    CUDA without Triton        the PyTorch reference, with one warning line the first time.
    ``TRITON_INTERPRET=1``     ``backend="triton"`` also runs the kernels on CPU tensors, in
                               Triton's interpreter (how the tests check kernels against their
                               references without a GPU). Set it before ``import kernels``:
                               Triton reads it when it is imported (on the first Triton call)
                               and when each kernel module is; tests/conftest.py sets it.

``last_backend()`` tells which backend (``"triton"`` or ``"torch"``) the most recent kernel
call used; the ``kernels`` logger also says it at DEBUG level the first time each is chosen.

Families:
    cross_entropy   ``seg_cross_entropy``: softmax CE over dense or plain logits
    balanced_bce    ``edge_bce``: HED's class-balanced binary cross-entropy
    focal           ``sigmoid_focal_loss``: RetinaNet's focal loss (torchvision's formula)
    multi_head      ``dense_losses``: segmentation CE and K edge maps in one launch
    combine         ``combine_losses``: fixed or uncertainty weighting of the task losses
    gram            ``gram``, ``weighted_rows``, ``graddrop``: the task-gradient matrix
"""

from __future__ import annotations

import functools
import logging
import os

import torch

# Read once: block sizes are chosen for the interpreter or the GPU according to it.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

log = logging.getLogger("kernels")
_last_backend: str | None = None
_announced: set[str] = set()


@functools.cache
def triton_import_error() -> str | None:
    """None when Triton imports, else why not (tried once, on the first Triton call)."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return str(e) or type(e).__name__
    return None


def triton_available() -> bool:
    """Whether Triton can be imported (imports it on the first call)."""
    return triton_import_error() is None


def last_backend() -> str | None:
    """``"triton"`` or ``"torch"``: the backend of the most recent kernel call (None before
    any)."""
    return _last_backend


def _record(backend: str) -> str:
    global _last_backend
    _last_backend = backend
    if backend not in _announced:  # a set lookup per call; the log line only once
        _announced.add(backend)
        log.debug("kernels: using the %s backend", backend)
    return backend


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for ``tensor`` given the requested ``backend``."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if backend == "auto":
        if not tensor.is_cuda:
            return _record("torch")
        if not triton_available():
            if "fallback" not in _announced:
                _announced.add("fallback")
                log.warning("kernels: Triton is not importable (%s); CUDA tensors use the "
                            "PyTorch reference losses (slower, same values)",
                            triton_import_error())
            return _record("torch")
        return _record("triton")
    if backend == "triton":
        # Checked before Triton is imported: Triton's own kernels (tl.sum...) are compiled or
        # interpreted according to the variable at that import.
        if not tensor.is_cuda and not (INTERPRET and os.environ.get("TRITON_INTERPRET") == "1"):
            raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1, set "
                               "before kernels is imported")
        if not triton_available():
            raise RuntimeError(f"backend='triton' but Triton is not importable: "
                               f"{triton_import_error()}")
    return _record(backend)


from .cross_entropy import seg_cross_entropy  # noqa: E402

__all__ = ["INTERPRET", "last_backend", "resolve_backend", "seg_cross_entropy",
           "triton_available"]
from .balanced_bce import edge_bce, edge_bce_maps  # noqa: E402
from .combine import combine_losses  # noqa: E402
from .focal import sigmoid_focal_loss  # noqa: E402
from .multi_head import dense_losses  # noqa: E402

__all__ += ["combine_losses", "dense_losses", "edge_bce", "edge_bce_maps", "sigmoid_focal_loss"]
from .gram import graddrop, gram, weighted_rows  # noqa: E402

__all__ += ["graddrop", "gram", "weighted_rows"]
