"""kernels.combine_losses against the plain formulas (fixed weights, Kendall et al.)."""

from __future__ import annotations

import pytest
import torch
from mtvision.kernels import combine_losses


@pytest.mark.parametrize("T", [1, 3, 17])
def test_fixed_and_uncertainty_weighting(T, poison):
    g = torch.Generator().manual_seed(T)
    losses = torch.rand(T, generator=g) * 3
    weights = torch.rand(T, generator=g)
    s = torch.randn(T, generator=g)
    for w, use_s in ((None, False), (weights, False), (None, True), (weights, True)):
        L1, s1 = losses.clone().requires_grad_(), s.clone().requires_grad_()
        out = combine_losses(L1, w, s1 if use_s else None, backend="triton")
        (out * 1.7).backward()
        L2, s2 = losses.clone().requires_grad_(), s.clone().requires_grad_()
        ww = torch.ones(T) if w is None else w
        ref = (ww * (0.5 * torch.exp(-s2) * L2 + 0.5 * s2)).sum() if use_s else (ww * L2).sum()
        (ref * 1.7).backward()
        torch.testing.assert_close(out.detach(), ref.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(L1.grad, L2.grad, rtol=1e-6, atol=1e-6)
        if use_s:
            torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(combine_losses(losses, w, s if use_s else None,
                                                  backend="torch"), ref.detach())


def test_shape_checks():
    with pytest.raises(ValueError, match="1-D"):
        combine_losses(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="log_vars"):
        combine_losses(torch.zeros(3), log_vars=torch.zeros(2))
