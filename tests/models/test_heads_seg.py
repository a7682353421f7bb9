"""Tests of the Panoptic-FPN semantic segmentation head (mtvision.models.heads.segmentation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtvision.models.heads import FeatureInfo, FPNSegHead
from mtvision.registry import HEADS, ConfigError

STRIDES = {"c1": 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}


def seg_feature_info() -> dict[str, FeatureInfo]:
    return {n: FeatureInfo(16 if n.startswith("c") else 32, s) for n, s in STRIDES.items()}


def seg_features(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(batch, fi.channels, math.ceil(h / fi.stride), math.ceil(w / fi.stride),
                       generator=g)
        for n, fi in seg_feature_info().items()
    }


def make_head(**kw) -> FPNSegHead:
    torch.manual_seed(0)
    kw.setdefault("channels", 16)
    return FPNSegHead(seg_feature_info(), num_classes=kw.pop("num_classes", 5), **kw)


def random_target(batch: int, h: int, w: int, classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, classes, (batch, h, w), generator=g)
    t[torch.rand(batch, h, w, generator=g) < 0.2] = 255
    return t


def test_registry_structure_and_config() -> None:
    assert HEADS.get("fpn_seg") is FPNSegHead
    head = HEADS.build({"name": "fpn_seg", "num_classes": 4, "channels": 16},
                       feature_info=seg_feature_info())
    assert head.task == "seg"
    # Panoptic FPN: 1/4 -> one conv, no upsampling; 1/8, 1/16, 1/32 -> 1, 2, 3 conv+2x stages.
    convs = [sum(isinstance(m, nn.Conv2d) for m in b.modules()) for b in head.branches]
    ups = [sum(isinstance(m, nn.Upsample) for m in b.modules()) for b in head.branches]
    gns = [sum(isinstance(m, nn.GroupNorm) for m in b.modules()) for b in head.branches]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3] and gns == convs
    with pytest.raises(ConfigError, match="p7"):
        make_head(in_features=("p2", "p7"))
    with pytest.raises(ConfigError, match="class_weights"):
        make_head(class_weights=[1.0, 2.0])


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_forward_shape(size: tuple[int, int]) -> None:
    head = make_head()
    out = head(seg_features(2, *size), size)
    assert out.shape == (2, 5, *size)
    # Other inputs (C levels, a different level set) also work.
    head = make_head(in_features=("c3", "p4", "c5"))
    assert head(seg_features(1, *size), size).shape == (1, 5, *size)


def test_loss_matches_cross_entropy_on_present_images() -> None:
    head = make_head()
    logits = head(seg_features(3, 32, 48, seed=1), (32, 48))
    target = random_target(3, 32, 48, 5)
    present = torch.tensor([True, False, True])
    got = head.loss(logits, target, present)
    assert set(got) == {"ce"}
    ref = F.cross_entropy(logits[[0, 2]], target[[0, 2]], ignore_index=255)
    assert got["ce"].item() == pytest.approx(ref.item(), rel=1e-6)
    # The absent image's labels do not count...
    other = target.clone()
    other[1] = 0
    assert head.loss(logits, other, present)["ce"].item() == pytest.approx(got["ce"].item())
    # ...unless it is present.
    assert head.loss(logits, other, torch.ones(3, dtype=torch.bool))["ce"] != got["ce"]

    weights = [0.5, 1.0, 2.0, 1.5, 0.1]
    wh = make_head(class_weights=weights)
    wlogits = wh(seg_features(3, 32, 48, seed=1), (32, 48))
    ref = F.cross_entropy(wlogits[[0, 2]], target[[0, 2]], weight=torch.tensor(weights),
                          ignore_index=255)
    assert wh.loss(wlogits, target, present)["ce"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_loss_all_ignored_and_gradients() -> None:
    head = make_head()
    logits = head(seg_features(2, 32, 32), (32, 32))
    ignored = torch.full((2, 32, 32), 255)
    loss = head.loss(logits, ignored, torch.tensor([True, True]))["ce"]
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    none = head(seg_features(2, 32, 32), (32, 32))
    loss = head.loss(none, random_target(2, 32, 32, 5), torch.tensor([False, False]))["ce"]
    assert loss.item() == 0.0
    loss.backward()

    head.zero_grad()
    logits = head(seg_features(2, 32, 32), (32, 32))
    head.loss(logits, random_target(2, 32, 32, 5), torch.tensor([True, False]))["ce"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_postprocess_argmax() -> None:
    head = make_head()
    logits = head(seg_features(2, 40, 56), (40, 56))
    preds = head.postprocess(logits, (40, 56))
    assert len(preds) == 2
    for i, p in enumerate(preds):
        assert p.shape == (40, 56) and p.dtype == torch.long
        assert torch.equal(p, logits[i].argmax(0))


def test_overfit_fixed_input() -> None:
    head = make_head()
    feats = seg_features(2, 32, 32, seed=4)
    target = random_target(2, 32, 32, 5, seed=1)
    # A piecewise-constant map a segmentation head can fit (random pixels would need memorising).
    target[:, :16, :16] = 1
    target[:, 16:, :] = 3
    target[:, :16, 16:] = 0
    target[0, 4:12, 20:28] = 4
    present = torch.tensor([True, True])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = head.loss(head(feats, (32, 32)), target, present)["ce"].item()
    for _ in range(30):
        loss = head.loss(head(feats, (32, 32)), target, present)["ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = head.loss(head(feats, (32, 32)), target, present)["ce"].item()
    assert last < 0.3 * first, (first, last)
