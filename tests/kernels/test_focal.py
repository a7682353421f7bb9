"""kernels.sigmoid_focal_loss against torchvision.ops.sigmoid_focal_loss."""

from __future__ import annotations

import pytest
import torch
import torchvision
from mtvision.kernels import sigmoid_focal_loss

from tests.kernels.conftest import DTYPES, GRAD_TOL, LOSS_TOL, assert_close, run


def tv_focal(x, t, alpha, gamma, reduction):
    return torchvision.ops.sigmoid_focal_loss(x.float(), t.float(), alpha, gamma, reduction)


@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 37, 5)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torchvision(shape, dtype, reduction, poison):
    g = torch.Generator().manual_seed(len(shape))
    for alpha, gamma in ((0.25, 2.0), (-1.0, 0.0), (0.5, 1.0), (0.75, 1.5)):
        logits = (torch.randn(shape, generator=g) * 4).to(dtype)
        targets = (torch.rand(shape, generator=g) < 0.3).float()
        if alpha == 0.75:
            targets = torch.rand(shape, generator=g)  # soft targets
        kw = dict(alpha=alpha, gamma=gamma, reduction=reduction)
        loss, grad, gw = run(sigmoid_focal_loss, logits, targets, backend="triton", **kw)
        ref_loss, ref_grad, _ = run(tv_focal, logits, targets, gw=gw, **kw)
        assert loss.dtype == torch.float32 and grad.dtype == dtype
        assert_close(loss, ref_loss, LOSS_TOL[dtype])
        assert_close(grad, ref_grad, GRAD_TOL[dtype])
        r_loss, r_grad, _ = run(sigmoid_focal_loss, logits, targets, gw=gw, backend="torch", **kw)
        assert_close(r_loss, ref_loss, LOSS_TOL[dtype])
        assert_close(r_grad, ref_grad, GRAD_TOL[dtype])


def test_extreme_logits():
    logits = torch.tensor([1e4, -1e4, 1e4, -1e4, 0.0, 30.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    for dtype in (torch.float32, torch.float16):
        loss, grad, gw = run(sigmoid_focal_loss, logits.to(dtype), targets, backend="triton")
        ref_loss, ref_grad, _ = run(tv_focal, logits.to(dtype), targets, gw=gw, alpha=0.25,
                                    gamma=2.0, reduction="none")
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert_close(loss, ref_loss, 1e-5)
        assert_close(grad, ref_grad, GRAD_TOL[dtype])


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), gamma=-1)
