"""Depth (``fpn_depth``) and surface normals (``fpn_normals``) heads: registry and options,
forward / backward at two input sizes, losses against hand-computed values (invalid pixels,
absent images), post-processing, and a seg + depth + normals model end to end."""

from __future__ import annotations

import math

import pytest
import torch

from mtvision.models import build_model
from mtvision.models.heads import FeatureInfo, FPNDepthHead, FPNNormalsHead
from mtvision.registry import HEADS, ConfigError

STRIDES = {"c1": 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}


def feature_info() -> dict[str, FeatureInfo]:
    return {n: FeatureInfo(16 if n.startswith("c") else 32, s) for n, s in STRIDES.items()}


def features(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(batch, fi.channels, math.ceil(h / fi.stride),
                           math.ceil(w / fi.stride), generator=g)
            for n, fi in feature_info().items()}


def build(name: str, **kw):
    torch.manual_seed(0)
    return HEADS.build({"name": name, "channels": 16, **kw}, feature_info=feature_info())


def test_registry_and_options() -> None:
    assert HEADS.get("fpn_depth") is FPNDepthHead and HEADS.get("fpn_normals") is FPNNormalsHead
    depth, normals = build("fpn_depth"), build("fpn_normals")
    assert depth.task == "depth" and normals.task == "normals"
    assert depth.dense_kind is None and normals.dense_kind is None  # never fused with seg/edge
    # Panoptic FPN branches: 1/4 -> one conv, 1/8, 1/16, 1/32 -> 1, 2, 3 conv + 2x stages.
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in b.modules())
             for b in depth.decoder.branches]
    assert convs == [1, 1, 2, 3]
    with pytest.raises(ConfigError, match="loss"):
        build("fpn_depth", loss="l2")
    with pytest.raises(ConfigError, match="activation"):
        build("fpn_depth", activation="relu")
    with pytest.raises(ConfigError, match="silog_lambda"):
        build("fpn_depth", silog_lambda=1.5)
    with pytest.raises(ConfigError, match="p7"):
        build("fpn_normals", in_features=["p2", "p7"])
    with pytest.raises(ConfigError, match="did you mean"):
        HEADS.build({"name": "fpn_depth", "los": "l1"}, feature_info=feature_info())


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_depth_forward_backward(size: tuple[int, int], activation: str) -> None:
    head = build("fpn_depth", activation=activation, loss="silog")
    h, w = size
    out = head(features(2, h, w), size)
    assert out.shape == (2, 1, h, w) and bool((out > 0).all())
    target = torch.rand(2, h, w) * 5 + 0.5
    target[:, :5] = 0  # invalid rows
    loss = head.loss(out, target, torch.tensor([True, True]))["silog"]
    loss.backward()
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert head.predictor.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_normals_forward_backward(size: tuple[int, int]) -> None:
    head = build("fpn_normals")
    h, w = size
    out = head(features(2, h, w), size)
    assert out.shape == (2, 3, h, w)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, h, w), atol=1e-5)
    target = torch.randn(2, 3, h, w)
    target[:, :, :, :7] = 0  # invalid columns
    loss = head.loss(out, target, torch.tensor([True, False]))["cos"]
    loss.backward()
    assert 0.0 <= loss.item() <= 2.0
    assert head.predictor.weight.grad.abs().sum() > 0


def test_depth_l1_hand_computed() -> None:
    head = build("fpn_depth", loss="l1")
    outputs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[9.0, 9.0], [9.0, 9.0]]])[:, None]
    target = torch.tensor([[[2.0, 0.0], [1.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]])
    # Image 0: valid pixels (1 vs 2), (3 vs 1), (4 vs 4) -> (1 + 2 + 0) / 3; image 1 is absent.
    loss = head.loss(outputs, target, torch.tensor([True, False]))
    assert set(loss) == {"l1"} and loss["l1"].item() == pytest.approx(1.0)
    # Both present: pixels pool over the batch, (3 + 4 * 4) / 7.
    both = head.loss(outputs, target, torch.tensor([True, True]))["l1"]
    assert both.item() == pytest.approx(19 / 7)


def test_silog_hand_computed() -> None:
    lam = 0.85
    head = build("fpn_depth", loss="silog", silog_lambda=lam)
    outputs = torch.tensor([
        [[1.0, 2.0], [3.0, 4.0]],
        [[9.0, 9.0], [9.0, 9.0]],  # absent
        [[2.0, 2.0], [2.0, 2.0]],
        [[1.0, 1.0], [1.0, 1.0]],  # present, no valid pixel
    ])[:, None]
    target = torch.tensor([
        [[2.0, 0.0], [1.0, 4.0]],
        [[1.0, 1.0], [1.0, 1.0]],
        [[1.0, 0.0], [0.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ])
    present = torch.tensor([True, False, True, True])
    # Eigen eq. 4 per image, g = log d - log d*: image 0 g = (log 1/2, log 3, 0);
    # image 2 g = (log 2); image 3 has no valid pixel and is not averaged in.
    g0 = [math.log(0.5), math.log(3.0), 0.0]
    d0 = sum(x * x for x in g0) / 3 - lam * (sum(g0) / 3) ** 2
    d2 = (1 - lam) * math.log(2.0) ** 2
    loss = head.loss(outputs, target, present)["silog"]
    assert loss.item() == pytest.approx((d0 + d2) / 2, rel=1e-6)
    # lambda = 1 is scale invariant: multiplying every depth by 7 leaves it unchanged.
    inv = build("fpn_depth", loss="silog", silog_lambda=1.0)
    a = inv.loss(outputs, target, present)["silog"]
    b = inv.loss(outputs * 7, target, present)["silog"]
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_normals_cosine_hand_computed() -> None:
    head = build("fpn_normals")
    pred = torch.zeros(2, 3, 1, 4)
    target = torch.zeros(2, 3, 1, 4)
    # Image 0: pixel 0 at 90 degrees (1 - cos = 1), pixel 1 aligned with a non-unit target (0),
    # pixel 2 opposite (2), pixel 3 invalid (zero target). Image 1 is absent.
    pred[0, :, 0, 0], target[0, :, 0, 0] = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 2.0])
    pred[0, :, 0, 1], target[0, :, 0, 1] = torch.tensor([0, 1.0, 0]), torch.tensor([0, 3.0, 0])
    pred[0, :, 0, 2], target[0, :, 0, 2] = torch.tensor([1.0, 0, 0]), torch.tensor([-1.0, 0, 0])
    pred[0, :, 0, 3] = torch.tensor([0, 0, 1.0])
    pred[1, 0], target[1, 1] = 1.0, 1.0  # absent: would add 1 per pixel
    loss = head.loss(pred, target, torch.tensor([True, False]))
    assert set(loss) == {"cos"} and loss["cos"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["fpn_depth", "fpn_normals"])
def test_no_valid_pixel_gives_zero_loss_with_gradient(name: str) -> None:
    head = build(name)
    out = head(features(2, 32, 32), (32, 32))
    channels = 1 if name == "fpn_depth" else 3
    target = torch.zeros(2, 32, 32) if channels == 1 else torch.zeros(2, 3, 32, 32)
    for present in (torch.tensor([True, True]), torch.tensor([False, False])):
        (value,) = head.loss(out, target, present).values()
        assert value.item() == 0.0 and value.requires_grad
    valid_target = torch.ones_like(target)
    (value,) = head.loss(out, valid_target, torch.tensor([False, False])).values()
    assert value.item() == 0.0
    value.backward()
    assert float(head.predictor.weight.grad.abs().sum()) == 0.0


def test_postprocess_sizes() -> None:
    depth, normals = build("fpn_depth"), build("fpn_normals")
    feats = features(2, 64, 64)
    d = depth.postprocess(depth(feats, (64, 64)), (64, 64))
    n = normals.postprocess(normals(feats, (64, 64)), (48, 80))
    assert len(d) == 2 and d[0].shape == (64, 64) and d[0].dtype == torch.float32
    assert len(n) == 2 and n[1].shape == (3, 48, 80)
    assert torch.allclose(n[1].norm(dim=0), torch.ones(48, 80), atol=1e-5)


def test_seg_depth_normals_model_forward_losses_backward() -> None:
    torch.manual_seed(0)
    model = build_model({
        "backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 32},
        "heads": {"seg": {"name": "fpn_seg", "num_classes": 4},
                  "depth": {"name": "fpn_depth", "loss": "silog"},
                  "normals": {"name": "fpn_normals", "channels": 32}},
    })
    b, h, w = 3, 64, 64
    images = torch.randn(b, 3, h, w)
    seg = torch.randint(0, 4, (b, h, w))
    seg[:, :4] = 255
    depth = torch.rand(b, h, w) * 4 + 0.5
    depth[torch.rand(b, h, w) < 0.3] = 0  # invalid pixels
    normals = torch.nn.functional.normalize(torch.randn(b, 3, h, w), dim=1)
    normals[:, :, torch.rand(h, w) < 0.3] = 0
    targets = {"seg": seg, "depth": depth, "normals": normals}
    present = {"seg": torch.tensor([True, True, False]), "depth": torch.tensor([True, False, True]),
               "normals": torch.tensor([False, True, True])}
    out = model(images)
    assert out["depth"].shape == (b, 1, h, w) and out["normals"].shape == (b, 3, h, w)
    losses = model.losses(out, targets, present)
    assert {t: set(c) for t, c in losses.items()} == {
        "seg": {"ce"}, "depth": {"silog"}, "normals": {"cos"}}
    total = sum(v for parts in losses.values() for v in parts.values())
    assert torch.isfinite(total)
    total.backward()
    for p in model.shared_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # The absent image's labels do not matter.
    depth2 = depth.clone()
    depth2[1] = 100.0
    again = model.losses(out, {**targets, "depth": depth2}, present)["depth"]["silog"]
    assert torch.equal(again, losses["depth"]["silog"])
    preds = model.predict(images)
    assert preds["depth"][0].shape == (h, w) and preds["normals"][2].shape == (3, h, w)


def test_evaluate_scores_depth_and_normals() -> None:
    """``evaluate`` builds the new metrics and scores the predictions against batch targets."""
    from mtvision.engine.evaluator import evaluate

    torch.manual_seed(0)
    model_cfg = {"backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 32},
                 "heads": {"depth": {"name": "fpn_depth"}, "normals": {"name": "fpn_normals"}}}
    model = build_model(model_cfg)
    images = torch.randn(2, 3, 32, 32)
    preds = model.predict(images)
    batch = {"images": images,
             "targets": {"depth": torch.stack(preds["depth"]) * 2,
                         "normals": torch.stack(preds["normals"])},
             "present": {"depth": torch.tensor([True, True]),
                         "normals": torch.tensor([True, False])}}
    res = evaluate(model, [batch], model_cfg, {}, {"edge_thresholds": 9, "edge_max_dist": 0.01},
                   torch.device("cpu"), progress=False)
    # Predictions are half the targets: |d - d*| / d* = 0.5 everywhere, ratio 2 > 1.25^3.
    assert res["depth"]["rel_err"] == pytest.approx(0.5, rel=1e-5)
    assert res["depth"]["delta3"] == 0.0
    assert res["normals"]["mean_angle"] == pytest.approx(0.0, abs=0.05)
    assert res["normals"]["within_11.25"] == 1.0
