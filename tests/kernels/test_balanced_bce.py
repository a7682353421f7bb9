"""kernels.edge_bce / edge_bce_maps: HED's class-balanced BCE against hand computations, a
per-pixel loop, F.binary_cross_entropy_with_logits with HED's weights, and the reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mtvision.kernels import edge_bce, edge_bce_maps

from tests.kernels.conftest import DTYPES, GRAD_TOL, LOSS_TOL, assert_close, run


def random_edges(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(batch, h, w, generator=g) < 0.2).long()
    t[torch.rand(batch, h, w, generator=g) < 0.1] = 255
    return t


def hed_bce(logits, target, ignore_index=255, balanced=True, reduction="mean"):
    """HED's loss written independently: weights from per-image counts, then torch's BCE."""
    x = logits.float().reshape(target.shape)
    valid = target != ignore_index
    pos = valid & (target == 1)
    neg = valid & (target == 0)
    n_pos = pos.sum((1, 2), keepdim=True).float()
    n_neg = neg.sum((1, 2), keepdim=True).float()
    beta = n_neg / (n_pos + n_neg).clamp_min(1)
    w = (pos * beta + neg * (1 - beta)) if balanced else valid.float()
    loss = F.binary_cross_entropy_with_logits(x, pos.float(), weight=w, reduction="none")
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / valid.sum().clamp_min(1)


@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (33, 17)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(hw, dtype, reduction, poison):
    for balanced in (True, False):
        g = torch.Generator().manual_seed(hw[0])
        logits = (torch.randn(3, 1, *hw, generator=g) * 4).to(dtype)
        target = random_edges(3, *hw, seed=hw[1])
        kw = dict(balanced=balanced, reduction=reduction)
        loss, grad, gw = run(edge_bce, logits, target, backend="triton", **kw)
        ref_loss, ref_grad, _ = run(hed_bce, logits, target, gw=gw, **kw)
        assert loss.dtype == torch.float32 and grad.dtype == dtype
        assert_close(loss, ref_loss, LOSS_TOL[dtype])
        assert_close(grad, ref_grad, GRAD_TOL[dtype])
        r_loss, r_grad, _ = run(edge_bce, logits, target, gw=gw, backend="torch", **kw)
        assert_close(r_loss, ref_loss, LOSS_TOL[dtype])
        assert_close(grad, r_grad, GRAD_TOL[dtype])
        # [N, H, W] logits give the same.
        flat, _, _ = run(edge_bce, logits[:, 0], target, gw=gw, backend="triton", **kw)
        assert_close(flat, loss, 1e-6)


def test_extreme_logits():
    target = random_edges(2, 5, 7, seed=3)
    for dtype in (torch.float32, torch.float16):
        logits = ((torch.rand(2, 1, 5, 7) < 0.5).float() * 2e4 - 1e4).to(dtype)
        loss, grad, gw = run(edge_bce, logits, target, backend="triton")
        ref_loss, ref_grad, _ = run(hed_bce, logits, target, gw=gw)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert_close(loss, ref_loss, 1e-5)
        assert_close(grad, ref_grad, GRAD_TOL[dtype])


def test_maps_share_one_target(poison):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 9, 5, generator=g)
    target = random_edges(2, 9, 5)
    w = torch.randn(6, generator=g)
    for reduction in ("mean", "sum"):
        loss, grad, _ = run(edge_bce_maps, logits, target, gw=w, backend="triton",
                            reduction=reduction)
        x = logits.clone().requires_grad_()
        ref = torch.stack([hed_bce(x[:, k], target, reduction=reduction) for k in range(6)])
        (ref * w).sum().backward()
        assert_close(loss, ref.detach(), 1e-5)
        assert_close(grad, x.grad, 1e-5)


def test_bad_shapes():
    with pytest.raises(ValueError, match="edge logits"):
        edge_bce(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        edge_bce_maps(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long),
                      reduction="none")


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_hand_computed(backend) -> None:
    # One 2x2 image, target [[1, 0], [0, 255]], logits 0: 3 valid pixels, 1 positive, 2 negative,
    # beta = 2/3; every BCE term is ln 2, so the loss is (2/3 + 2 * 1/3) ln 2 / 3 = 4/9 ln 2.
    target = torch.tensor([[[1, 0], [0, 255]]])
    loss = edge_bce(torch.zeros(1, 1, 2, 2), target, backend=backend)
    assert loss.item() == pytest.approx(4 / 9 * math.log(2))

    # Two 1x3 images.
    # image 0: target [1, 0, 0], logits 0 -> beta = 2/3, sum = (2/3 + 1/3 + 1/3) ln 2 = 4/3 ln 2
    # image 1: target [1, 0, 255], logits [ln 3, -ln 3, 7] -> beta = 1/2; the positive costs
    #   -ln sigmoid(ln 3) = ln(4/3), the negative -ln(1 - sigmoid(-ln 3)) = ln(4/3), the
    #   ignored pixel nothing: sum = ln(4/3).
    # 5 non-ignored pixels in the batch.
    target = torch.tensor([[[1, 0, 0]], [[1, 0, 255]]])
    logits = torch.tensor([[[0.0, 0.0, 0.0]], [[math.log(3), -math.log(3), 7.0]]])
    expected = (4 / 3 * math.log(2) + math.log(4 / 3)) / 5
    assert edge_bce(logits, target, backend=backend).item() == pytest.approx(expected)
    # [B, 1, H, W] logits give the same.
    assert edge_bce(logits[:, None], target, backend=backend).item() == pytest.approx(expected)
    # A custom ignore value.
    t7 = target.clone()
    t7[1, 0, 2] = 7
    assert edge_bce(logits, t7, ignore_index=7, backend=backend).item() == pytest.approx(expected)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_matches_pixel_loop(backend) -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 1, 5, 6, generator=g) * 3
    target = random_edges(3, 5, 6, seed=2)
    target[2] = 255  # an all-ignored image contributes nothing
    total, count = 0.0, 0
    for n in range(3):
        pixels = [(i, j) for i in range(5) for j in range(6) if target[n, i, j] != 255]
        n_pos = sum(int(target[n, i, j] == 1) for i, j in pixels)
        beta = (len(pixels) - n_pos) / max(len(pixels), 1)
        for i, j in pixels:
            p = 1 / (1 + math.exp(-logits[n, 0, i, j].item()))
            if target[n, i, j] == 1:
                total += -beta * math.log(p)
            else:
                total += -(1 - beta) * math.log(1 - p)
        count += len(pixels)
    loss = edge_bce(logits, target, backend=backend)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_all_ignored(backend, poison) -> None:
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    loss = edge_bce(logits, torch.full((2, 4, 4), 255), backend=backend)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


