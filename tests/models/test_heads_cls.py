"""Tests of the linear classification head (mtvision.models.heads.classification)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtvision.models.heads import FeatureInfo, LinearClsHead
from mtvision.registry import HEADS, ConfigError

STRIDES = {"c1": 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}
CHANNELS = {"c1": 8, "c2": 8, "c3": 16, "c4": 24, "c5": 32, "p2": 16, "p3": 16, "p4": 16, "p5": 16}


def cls_feature_info() -> dict[str, FeatureInfo]:
    return {n: FeatureInfo(CHANNELS[n], s) for n, s in STRIDES.items()}


def cls_features(batch: int, h: int = 64, w: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(batch, fi.channels, math.ceil(h / fi.stride), math.ceil(w / fi.stride),
                       generator=g)
        for n, fi in cls_feature_info().items()
    }


def make_head(**kw) -> LinearClsHead:
    torch.manual_seed(0)
    return LinearClsHead(cls_feature_info(), num_classes=kw.pop("num_classes", 4), **kw)


def test_registry_and_forward() -> None:
    assert HEADS.get("linear") is LinearClsHead
    head = HEADS.build({"name": "linear", "num_classes": 6}, feature_info=cls_feature_info())
    assert head.task == "cls"
    assert head(cls_features(3), (64, 64)).shape == (3, 6)

    # Several levels: global-average-pooled and concatenated, 24 + 32 inputs.
    head = make_head(in_features=("c4", "c5"))
    assert head.classifier[-1].in_features == 56
    feats = cls_features(2)
    pooled = torch.cat([feats["c4"].mean((2, 3)), feats["c5"].mean((2, 3))], 1)
    assert torch.allclose(head(feats, (64, 64)), head.classifier(pooled))

    hidden = make_head(hidden=10, dropout=0.2)
    assert hidden.classifier[1].out_features == 10
    hidden.eval()
    assert hidden(feats, (64, 64)).shape == (2, 4)
    with pytest.raises(ConfigError, match="c9"):
        make_head(in_features=("c9",))
    with pytest.raises(ConfigError, match="dropout"):
        make_head(dropout=1.5)


def test_single_label_loss() -> None:
    head = make_head()
    logits = head(cls_features(4, seed=1), (64, 64))
    targets = torch.tensor([2, 0, -1, 3])
    present = torch.tensor([True, False, True, True])
    got = head.loss(logits, targets, present)
    assert set(got) == {"ce"}
    # Image 2 is present but unlabelled (-1): only images 0 and 3 count.
    ref = F.cross_entropy(logits[[0, 3]], targets[[0, 3]])
    assert got["ce"].item() == pytest.approx(ref.item(), rel=1e-6)
    changed = targets.clone()
    changed[1] = 1
    assert head.loss(logits, changed, present)["ce"].item() == pytest.approx(got["ce"].item())
    assert head.loss(logits, changed, torch.ones(4).bool())["ce"] != got["ce"]

    got["ce"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    out = head(cls_features(2), (64, 64))
    none = head.loss(out, torch.tensor([1, 2]), torch.tensor([False, False]))["ce"]
    assert none.item() == 0.0
    none.backward()
    unlabelled = head.loss(out, torch.tensor([-1, -1]), torch.tensor([True, True]))["ce"]
    assert unlabelled.item() == 0.0
    with pytest.raises(ValueError, match="multi_label"):
        head.loss(out, torch.zeros(2, 4), torch.tensor([True, True]))


def test_multi_label_loss() -> None:
    head = make_head(multi_label=True)
    logits = head(cls_features(3, seed=2), (64, 64))
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    present = torch.tensor([True, True, False])
    got = head.loss(logits, targets, present)
    assert set(got) == {"bce"}
    ref = F.binary_cross_entropy_with_logits(logits[:2], targets[:2])
    assert got["bce"].item() == pytest.approx(ref.item(), rel=1e-6)
    changed = targets.clone()
    changed[2] = 0
    assert head.loss(logits, changed, present)["bce"].item() == pytest.approx(got["bce"].item())
    got["bce"].backward()
    assert all(p.grad is not None for p in head.parameters())
    none = head.loss(head(cls_features(3), (64, 64)), targets, torch.zeros(3).bool())["bce"]
    assert none.item() == 0.0
    none.backward()


def test_postprocess() -> None:
    head = make_head()
    logits = torch.tensor([[-1.0, 3.0, 1.0, -2.0], [2.0, 0.0, 0.0, 0.0]])  # sigmoid(0) = 0.5
    preds = head.postprocess(logits, (64, 64))
    assert len(preds) == 2
    probs = logits.softmax(1)
    assert preds[0]["label"] == 1 and preds[1]["label"] == 0
    assert isinstance(preds[0]["label"], int) and isinstance(preds[0]["score"], float)
    assert preds[0]["score"] == pytest.approx(probs[0, 1].item())
    assert torch.allclose(preds[1]["probs"], probs[1])
    assert "labels" not in preds[0]

    multi = make_head(multi_label=True)
    preds = multi.postprocess(logits, (64, 64))
    assert preds[0]["labels"] == [1, 2] and preds[1]["labels"] == [0, 1, 2, 3]
    assert preds[0]["label"] == 1
    assert preds[0]["score"] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert torch.allclose(preds[0]["probs"], logits[0].sigmoid())
    assert multi.postprocess(torch.full((1, 4), -5.0), (64, 64))[0]["labels"] == []


@pytest.mark.parametrize("multi_label", [False, True])
def test_overfit_fixed_input(multi_label: bool) -> None:
    head = make_head(multi_label=multi_label, hidden=16)
    feats = cls_features(6, 32, 32, seed=3)
    if multi_label:
        targets = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                                [0, 0, 0, 1], [1, 0, 1, 0]])
    else:
        targets = torch.tensor([0, 1, 2, 3, 1, 2])
    present = torch.ones(6, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = sum(head.loss(head(feats, (32, 32)), targets, present).values()).item()
    for _ in range(40):
        loss = sum(head.loss(head(feats, (32, 32)), targets, present).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = sum(head.loss(head(feats, (32, 32)), targets, present).values()).item()
    assert last < 0.3 * first, (first, last)
