"""Small loss gradients survive float16 (issue 14, defect 4): the fused losses keep dL/dlogits
in float32 until backward has multiplied in the loss scale and the mean's 1/n, as GradScaler
needs. Each case has gradients between float16's subnormals (or below them) before scaling
and normal float16 numbers after a 2^16 loss scale; the kernels must give the float32
autograd gradient of the reference, rounded once to float16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from mtvision.kernels.balanced_bce import edge_bce_reference

from mtvision import kernels

LOSS_SCALE = 2.0**16
FP16_MIN_NORMAL = 2.0**-14


def easy_negatives(device, g):
    """Focal: background anchors scored -5.5 to -6.5 (p = 1.5e-3 to 4e-3): per-element
    gradients ~1e-8 to 1.5e-7, under float16's normal range."""
    x = -5.5 - torch.rand(64, 8, generator=g)
    t = torch.zeros(64, 8)
    t[::9, 0] = 1.0  # a few positives (large gradients) beside them
    x[::9, 0] = 2.0
    return x.to(device), t.to(device)


def confident_pixels(device, g):
    """Segmentation: per pixel the labelled class and one other at 0 (p = 0.5), the other
    three at -12 to -14 (p = 4e-7 to 3e-6). (A labelled class far ahead of all others would
    make its own gradient p - 1 a float32 cancellation, inexact in any implementation.)"""
    x = -12.0 - 2.0 * torch.rand(2, 5, 4, 4, generator=g)
    t = torch.randint(0, 5, (2, 4, 4), generator=g)
    x.scatter_(1, t[:, None], 0.0)
    x.scatter_(1, ((t + 1) % 5)[:, None], 0.0)
    return x.to(device), t.to(device)


def confident_edges(device, g):
    """Edges: non-edge pixels at -12 to -14 (sigmoid(x) = 8e-7 to 6e-6); edge pixels at 0 to
    2, where 1 - sigmoid(x) is no float32 cancellation."""
    t = (torch.rand(2, 4, 4, generator=g) < 0.3).long()
    x = torch.where(t > 0, 2.0 * torch.rand(2, 4, 4, generator=g),
                    -12.0 - 2.0 * torch.rand(2, 4, 4, generator=g))[:, None]
    return x.to(device), t.to(device)


def grads(loss_fn, x16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of LOSS_SCALE * loss_fn(x) w.r.t. the float16 logits, the float32 autograd
    gradient at the same values rounded once to float16)."""
    x = x16.clone().requires_grad_()
    (loss_fn(x) * LOSS_SCALE).backward()
    x32 = x16.float().requires_grad_()
    (loss_fn(x32, reference=True) * LOSS_SCALE).backward()
    return x.grad, x32.grad.half()


def cases(backend: str):
    def focal(x, reference=False, t=None):
        if reference:
            return torchvision.ops.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
        return kernels.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum", backend=backend)

    def ce(x, reference=False, t=None):
        if reference:
            return F.cross_entropy(x, t)
        return kernels.seg_cross_entropy(x, t, backend=backend)

    def edge(x, reference=False, t=None):
        if reference:
            return edge_bce_reference(x, t)
        return kernels.edge_bce(x, t, backend=backend)

    def dense_seg(x, reference=False, t=None):
        if reference:
            return F.cross_entropy(x, t)
        return kernels.dense_losses(x, t, backend=backend)[0]

    def dense_edge(x, reference=False, t=None):
        if reference:
            return edge_bce_reference(x[:, 0], t)
        return kernels.dense_losses(edge_logits=x, edge_target=t, backend=backend)[1][0]

    return {"focal": (focal, easy_negatives), "cross_entropy": (ce, confident_pixels),
            "edge_bce": (edge, confident_edges), "dense_seg": (dense_seg, confident_pixels),
            "dense_edge": (dense_edge, confident_edges)}


def check_case(name: str, device: str, backend: str) -> None:
    loss_fn, make = cases(backend)[name]
    x, t = make(device, torch.Generator().manual_seed(0))
    x16 = x.half()
    fn = lambda v, reference=False: loss_fn(v, reference, t.to(v.dtype) if name == "focal" else t)  # noqa: E731
    got, want = grads(fn, x16)
    # The premise: every expected gradient is a normal float16 number once scaled, and many
    # were not before scaling (they would flush or lose most of their digits).
    assert (want.float().abs() >= FP16_MIN_NORMAL).all()
    assert ((want.float() / LOSS_SCALE).abs() < FP16_MIN_NORMAL).float().mean() > 0.4
    assert got.dtype == torch.float16
    # Both are float32 values rounded once to float16: at most an ulp or two apart.
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=0.0)


@pytest.mark.parametrize("name", list(cases("triton")))
def test_scaled_fp16_gradients_match_float32(name):
    check_case(name, "cpu", "triton")
