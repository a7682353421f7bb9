"""Shared helpers of the kernel tests: dtype tolerances and poisoned output buffers.

The Triton path runs under ``TRITON_INTERPRET=1`` (set in tests/conftest.py), so shapes stay
small; every test compares with the PyTorch / torchvision function the kernel must equal.
"""

from __future__ import annotations

import pytest
import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (rtol, atol relative to the reference's largest magnitude) per input dtype: the loss is
# accumulated in float32 either way, the gradient is returned in the input dtype.
LOSS_TOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    actual, expected = actual.double(), expected.double()
    scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1e-6)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def run(fn, logits, target, gw=None, **kw):
    """Loss, gradient of ``sum(loss * gw)`` with respect to a copy of ``logits``, and ``gw``
    (random, of the loss's shape, unless given: pass the same to the reference)."""
    x = logits.clone().requires_grad_()
    loss = fn(x, target, **kw)
    gw = torch.randn_like(loss) if gw is None else gw
    (loss * gw).sum().backward()
    return loss.detach(), x.grad, gw


@pytest.fixture
def poison(monkeypatch):
    """Every ``torch.empty`` / ``torch.empty_like`` of the test returns NaN-filled memory, so
    an output element a kernel fails to write shows up as NaN."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def poisoned_like(*args, **kwargs):
        t = empty_like(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", poisoned)
    monkeypatch.setattr(torch, "empty_like", poisoned_like)
