"""kernels.seg_cross_entropy against F.cross_entropy and the kernel's PyTorch reference."""

from __future__ import annotations

import mtvision.kernels.cross_entropy as ce_mod
import pytest
import torch
import torch.nn.functional as F
from mtvision.kernels import seg_cross_entropy

from tests.kernels.conftest import DTYPES, GRAD_TOL, LOSS_TOL, assert_close, run

# [N, C, *spatial]: one pixel, odd sizes, C = 1, the looped path (C > 64) up to C = 1000,
# plain [N, C] logits and a 3-D spatial grid.
SHAPES = [(1, 1, 1, 1), (2, 5, 7, 9), (3, 21, 5, 11), (2, 150, 3, 5), (1, 1000, 2, 3), (4, 3),
          (2, 4, 3, 5, 2)]


def make(shape, dtype, seed=0, ignore=True, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    N, C = shape[:2]
    logits = (torch.randn(shape, generator=g) * scale).to(dtype)
    target = torch.randint(0, C, (N, *shape[2:]), generator=g)
    if ignore:
        target[torch.rand(target.shape, generator=g) < 0.3] = 255
    return logits, target


def torch_ce(x, t, weight=None, ignore_index=255, label_smoothing=0.0, reduction="mean"):
    return F.cross_entropy(x.float(), t, weight=weight, ignore_index=ignore_index,
                           label_smoothing=label_smoothing, reduction=reduction)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_over_shapes_dtypes_and_options(shape, dtype, poison):
    C = shape[1]
    for i, (reduction, weighted, smoothing, ignore) in enumerate([
        ("mean", False, 0.0, True), ("mean", True, 0.1, True), ("sum", True, 0.0, False),
        ("none", False, 0.2, True), ("mean", False, 0.0, False), ("none", True, 0.0, True),
    ]):
        logits, target = make(shape, dtype, seed=i, ignore=ignore)
        if not (target != 255).any():
            target.view(-1)[0] = 0
        weight = torch.rand(C, generator=torch.Generator().manual_seed(i)) + 0.1 \
            if weighted else None
        kw = dict(weight=weight, label_smoothing=smoothing, reduction=reduction)
        loss, grad, gw = run(seg_cross_entropy, logits, target, backend="triton", **kw)
        ref_loss, ref_grad, _ = run(torch_ce, logits, target, gw=gw, **kw)
        assert loss.dtype == torch.float32 and grad.dtype == dtype
        assert_close(loss, ref_loss, LOSS_TOL[dtype])
        assert_close(grad, ref_grad, GRAD_TOL[dtype])
        # The PyTorch reference path gives the same.
        r_loss, r_grad, _ = run(seg_cross_entropy, logits, target, gw=gw, backend="torch", **kw)
        assert_close(r_loss, ref_loss, LOSS_TOL[dtype])
        assert_close(r_grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_is_zero_not_nan(backend, weighted, poison):
    logits = torch.randn(2, 5, 3, 4, requires_grad=True)
    target = torch.full((2, 3, 4), 255)
    weight = torch.rand(5) if weighted else None
    loss = seg_cross_entropy(logits, target, weight, label_smoothing=0.1, backend=backend)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("C", [3, 100])
def test_extreme_logits(dtype, C):
    logits, target = make((2, C, 3, 5), torch.float32, seed=3)
    logits = (torch.sign(logits) * 1e4).to(dtype)
    logits[0, :, 0, 0] = 1e4  # a tie at the maximum
    for smoothing in (0.0, 0.1):
        loss, grad, gw = run(seg_cross_entropy, logits, target, backend="triton",
                             label_smoothing=smoothing)
        ref_loss, ref_grad, _ = run(torch_ce, logits, target, gw=gw, label_smoothing=smoothing)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert_close(loss, ref_loss, 1e-5)
        assert_close(grad, ref_grad, GRAD_TOL[dtype])


def test_hand_computed_value():
    # Two classes, logits (0, ln 3): p = (1/4, 3/4). Target 1 costs ln(4/3), target 0 ln 4;
    # weights (2, 1): weighted mean (1 * ln(4/3) + 2 * ln 4) / 3.
    logits = torch.tensor([[0.0, 1.0986122886681098]] * 2)
    target = torch.tensor([1, 0])
    w = torch.tensor([2.0, 1.0])
    import math
    expected = (math.log(4 / 3) + 2 * math.log(4)) / 3
    for backend in ("triton", "torch"):
        assert seg_cross_entropy(logits, target, w, backend=backend).item() == pytest.approx(
            expected, rel=1e-6)


def test_non_contiguous_input():
    logits, target = make((2, 7, 6, 5), torch.float32, seed=4)
    nhwc = logits.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last strides
    loss, grad, gw = run(seg_cross_entropy, nhwc, target, backend="triton")
    ref_loss, ref_grad, _ = run(torch_ce, nhwc, target, gw=gw)
    assert_close(loss, ref_loss, 1e-5)
    assert_close(grad, ref_grad, 1e-5)


def test_no_gradient_work_in_evaluation(monkeypatch):
    seen = []
    launch = ce_mod.ce_launch

    def spy(*args):
        seen.append(args[-1])  # compute_grad
        return launch(*args)

    monkeypatch.setattr(ce_mod, "ce_launch", spy)
    logits, target = make((2, 5, 4, 4), torch.float32)
    ref = torch_ce(logits, target)
    with torch.no_grad():
        a = seg_cross_entropy(logits.requires_grad_(), target, backend="triton")
    b = seg_cross_entropy(logits.detach(), target, backend="triton")
    assert seen == [False, False]
    assert a.grad_fn is None and b.grad_fn is None
    assert_close(a, ref, 1e-6)
    seg_cross_entropy(logits, target, backend="triton")
    assert seen[-1] is True


def test_bad_arguments():
    logits, target = make((2, 5, 4, 4), torch.float32)
    with pytest.raises(ValueError, match="reduction"):
        seg_cross_entropy(logits, target, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        seg_cross_entropy(logits, target, weight=torch.ones(4))
    with pytest.raises(ValueError, match="target shape"):
        seg_cross_entropy(logits, target[:, :3], backend="triton")
    with pytest.raises(TypeError, match="float32"):
        seg_cross_entropy(logits.double(), target)
    with pytest.raises(ValueError, match="backend"):
        seg_cross_entropy(logits, target, backend="cuda")


def test_out_of_range_target_is_nan_on_triton():
    logits, target = make((1, 4, 2, 2), torch.float32, ignore=False)
    target[0, 0, 0] = 9
    assert torch.isnan(seg_cross_entropy(logits, target, backend="triton"))
