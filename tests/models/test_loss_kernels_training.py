"""The model trains through the loss kernels: a few SGD steps of a small four-task model give
the same losses and parameters with ``loss_backend: triton`` (interpreted on the CPU) as with
the PyTorch reference, and the one-launch seg+edge path equals the per-head losses."""

from __future__ import annotations

import copy

import pytest
import torch

from mtvision.models import build_model
from mtvision.registry import ConfigError

HEADS = {"det": {"name": "fcos", "num_classes": 3, "in_features": ["p4", "p5"]},
         "seg": {"name": "fpn_seg", "num_classes": 4, "channels": 16,
                 "class_weights": [0.3, 1, 1, 1], "label_smoothing": 0.05},
         "edge": {"name": "hed", "side_channels": 4},
         "cls": {"name": "linear", "num_classes": 2}}


def model_cfg(**extra):
    return {"backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 16},
            "heads": HEADS, **extra}


def batch(b=3, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 4, (b, h, w), generator=g)
    seg[:, :3] = 255
    edge = (torch.rand(b, h, w, generator=g) < 0.15).long()
    edge[:, -2:] = 255
    targets = {
        "det": [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 36.0], [20.0, 2.0, 44.0, 20.0]]),
                 "labels": torch.tensor([1, 2])} for _ in range(b)],
        "seg": seg, "edge": edge, "cls": torch.randint(0, 2, (b,), generator=g),
    }
    present = {t: torch.ones(b, dtype=torch.bool) for t in targets}
    present["edge"] = torch.tensor([True, False, True])[:b]
    return torch.randn(b, 3, h, w, generator=g), targets, present


def train(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        images, targets, present = batch(seed=step)
        comps = model.losses(model(images), targets, present)
        losses = {t: sum(c for c in parts.values()) for t, parts in comps.items()}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({t: float(v.detach()) for t, v in losses.items()})
    return history


def backend_pair():
    """The same model (same weights) on the PyTorch reference and on the Triton kernels."""
    torch.manual_seed(0)
    ref = build_model(model_cfg(loss_backend="torch"))
    tri = copy.deepcopy(ref)
    tri.loss_backend = "triton"
    for head in tri.heads.values():
        head.loss_backend = "triton"
    return ref, tri


def test_triton_and_torch_backends_train_alike():
    ref, tri = backend_pair()
    ref.train()
    tri.train()
    h_ref, h_tri = train(ref), train(tri)
    for a, b in zip(h_ref, h_tri, strict=True):
        assert a.keys() == b.keys() == {"det", "seg", "edge", "cls"}
        for t in a:
            assert b[t] == pytest.approx(a[t], rel=1e-4, abs=1e-6), t
    assert h_ref[-1]["seg"] < h_ref[0]["seg"]  # it is training, not standing still


def test_triton_and_torch_backends_give_the_same_gradients():
    # Every parameter's gradient of one step from the same weights: the backends' difference
    # itself, not as amplified by later steps (three SGD steps with momentum turn 1e-6
    # relative differences into 1e-3 in BatchNorm'd backbones, whichever backend is right).
    ref, tri = backend_pair()
    images, targets, present = batch()
    for model in (ref, tri):
        model.train()
        comps = model.losses(model(images), targets, present)
        sum(c for parts in comps.values() for c in parts.values()).backward()
    for (name, p), q in zip(ref.named_parameters(), tri.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_seg_edge_equals_per_head_losses(backend):
    torch.manual_seed(1)
    fused = build_model(model_cfg(loss_backend=backend))
    apart = copy.deepcopy(fused)
    apart.fuse_dense_losses = False
    images, targets, present = batch()
    out = fused(images)
    a = fused.losses(out, targets, present)
    b = apart.losses(out, targets, present)
    for task in ("seg", "edge"):
        for comp in a[task]:
            torch.testing.assert_close(a[task][comp], b[task][comp], rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(a["seg"]["ce"] + a["edge"]["fuse"] + a["edge"]["sides"],
                             out["seg"])[0]
    gb = torch.autograd.grad(b["seg"]["ce"] + b["edge"]["fuse"] + b["edge"]["sides"],
                             out["seg"])[0]
    torch.testing.assert_close(ga, gb)


def test_loss_backend_is_validated():
    with pytest.raises(ConfigError, match="loss_backend"):
        build_model(model_cfg(loss_backend="cuda"))
