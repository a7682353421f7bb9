"""kernels.dense_losses: segmentation and edge losses in one launch equal the single-head
functions (and F.cross_entropy / HED's BCE through them)."""

from __future__ import annotations

import mtvision.kernels.jit.multi_head as dense_mod
import pytest
import torch
from mtvision.kernels import dense_losses, edge_bce, seg_cross_entropy

from tests.kernels.conftest import DTYPES, GRAD_TOL, assert_close


def inputs(N, C, K, H, W, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = (torch.randn(N, C, H, W, generator=g) * 3).to(dtype)
    seg_t = torch.randint(0, C, (N, H, W), generator=g)
    seg_t[torch.rand(N, H, W, generator=g) < 0.2] = 255
    edge = (torch.randn(N, K, H, W, generator=g) * 3).to(dtype)
    edge_t = (torch.rand(N, H, W, generator=g) < 0.2).long()
    edge_t[torch.rand(N, H, W, generator=g) < 0.1] = 255
    return seg, seg_t, edge, edge_t


@pytest.mark.parametrize("dims", [(2, 5, 3, 7, 9), (1, 90, 1, 5, 3), (3, 1, 6, 1, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_single_head_functions(dims, dtype, poison):
    N, C, K, H, W = dims
    seg, seg_t, edge, edge_t = inputs(*dims, dtype)
    weight = torch.rand(C) + 0.1
    for reduction in ("mean", "sum"):
        sx, ex = seg.clone().requires_grad_(), edge.clone().requires_grad_()
        s, e = dense_losses(sx, seg_t, ex, edge_t, seg_weight=weight, label_smoothing=0.1,
                            reduction=reduction, backend="triton")
        gs, ge = torch.randn(()), torch.randn(K)
        (s * gs + (e * ge).sum()).backward()

        sr, er = seg.clone().requires_grad_(), edge.clone().requires_grad_()
        s_ref = seg_cross_entropy(sr, seg_t, weight, label_smoothing=0.1, reduction=reduction,
                                  backend="torch")
        e_ref = torch.stack([edge_bce(er[:, k], edge_t, reduction=reduction, backend="torch")
                             for k in range(K)])
        (s_ref * gs + (e_ref * ge).sum()).backward()
        assert s.shape == () and e.shape == (K,)
        assert_close(s.detach(), s_ref.detach(), 1e-5)
        assert_close(e.detach(), e_ref.detach(), 1e-5)
        assert_close(sx.grad, sr.grad, GRAD_TOL[dtype])
        assert_close(ex.grad, er.grad, GRAD_TOL[dtype])


def test_one_launch_and_partial_inputs(monkeypatch):
    seg, seg_t, edge, edge_t = inputs(2, 4, 2, 5, 6, torch.float32)
    launches = []
    kernel = dense_mod.dense_kernel

    class Spy:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(dense_mod, "dense_kernel", Spy())
    s, e = dense_losses(seg, seg_t, edge, edge_t, backend="triton")
    assert len(launches) == 1
    s_only, none = dense_losses(seg, seg_t, backend="triton")
    none2, e_only = dense_losses(edge_logits=edge, edge_target=edge_t, backend="triton")
    assert none is None and none2 is None
    assert_close(s_only, s, 1e-6)
    assert_close(e_only, e, 1e-6)
    # Only the edge logits need a gradient.
    ex = edge.clone().requires_grad_()
    s2, e2 = dense_losses(seg, seg_t, ex, edge_t, backend="triton")
    e2.sum().backward()
    assert s2.grad_fn is not None or not s2.requires_grad
    assert ex.grad is not None and torch.isfinite(ex.grad).all()


def test_shape_checks():
    seg, seg_t, edge, edge_t = inputs(2, 4, 2, 5, 6, torch.float32)
    with pytest.raises(ValueError, match="one grid"):
        dense_losses(seg, seg_t, edge[..., :5], edge_t[..., :5])
    with pytest.raises(ValueError, match="needs"):
        dense_losses()
    with pytest.raises(ValueError, match="seg_target"):
        dense_losses(seg, seg_t[:, :2])
