"""Tests of the HED edge head (mtvision.models.heads.edge); its loss kernel has
tests/kernels/test_edge_bce.py."""

from __future__ import annotations

import math

import pytest
import torch
from mtvision.kernels import edge_bce
from torch import nn

from mtvision.models.heads import FeatureInfo, HEDEdgeHead
from mtvision.registry import HEADS, ConfigError

STRIDES = {"c1": 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}


def edge_feature_info() -> dict[str, FeatureInfo]:
    return {n: FeatureInfo(16 if n.startswith("c") else 32, s) for n, s in STRIDES.items()}


def edge_features(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(batch, fi.channels, math.ceil(h / fi.stride), math.ceil(w / fi.stride),
                       generator=g)
        for n, fi in edge_feature_info().items()
    }


def make_head(**kw) -> HEDEdgeHead:
    torch.manual_seed(0)
    kw.setdefault("side_channels", 8)
    return HEDEdgeHead(edge_feature_info(), **kw)


def random_edges(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(batch, h, w, generator=g) < 0.15).long()
    t[torch.rand(batch, h, w, generator=g) < 0.1] = 255
    return t


# ---------------------------------------------------------------- the head


def test_registry_forward_and_fuse_init() -> None:
    assert HEADS.get("hed") is HEDEdgeHead
    head = HEADS.build({"name": "hed", "side_channels": 4}, feature_info=edge_feature_info())
    assert head.task == "edge"
    out = head(edge_features(2, 40, 56), (40, 56))
    assert len(out["sides"]) == 5
    assert all(s.shape == (2, 1, 40, 56) for s in out["sides"])
    assert out["fuse"].shape == (2, 1, 40, 56)
    # Fusion starts as the mean of the side outputs.
    mean = torch.stack(out["sides"]).mean(0)
    assert torch.allclose(out["fuse"], mean, atol=1e-6)

    direct = make_head(side_channels=0, in_features=("p2", "p3"))
    assert all(isinstance(s, nn.Conv2d) and s.kernel_size == (1, 1) for s in direct.sides)
    assert len(direct(edge_features(1, 40, 56), (40, 56))["sides"]) == 2
    with pytest.raises(ConfigError, match="c6"):
        make_head(in_features=("c6",))


def test_loss_components_present_images_and_gradients() -> None:
    head = make_head(side_weight=0.5, fuse_weight=2.0)
    out = head(edge_features(3, 32, 32, seed=1), (32, 32))
    target = random_edges(3, 32, 32)
    present = torch.tensor([True, False, True])
    losses = head.loss(out, target, present)
    assert set(losses) == {"fuse", "sides"}
    sel = [0, 2]
    fuse_ref = 2.0 * edge_bce(out["fuse"][sel], target[sel], backend="torch")
    sides_ref = 0.5 * sum(edge_bce(s[sel], target[sel], backend="torch") for s in out["sides"])
    assert losses["fuse"].item() == pytest.approx(fuse_ref.item(), rel=1e-6)
    assert losses["sides"].item() == pytest.approx(sides_ref.item(), rel=1e-6)

    other = target.clone()
    other[1] = 1 - other[1].clamp(max=1)
    again = head.loss(out, other, present)
    assert again["fuse"].item() == pytest.approx(losses["fuse"].item())
    assert again["sides"].item() == pytest.approx(losses["sides"].item())

    sum(losses.values()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    none = head.loss(head(edge_features(3, 32, 32), (32, 32)), target, torch.zeros(3).bool())
    assert all(v.item() == 0.0 for v in none.values())
    sum(none.values()).backward()


def test_postprocess_probabilities() -> None:
    head = make_head()
    out = head(edge_features(2, 24, 40), (24, 40))
    preds = head.postprocess(out, (24, 40))
    assert len(preds) == 2
    for i, p in enumerate(preds):
        assert p.shape == (24, 40) and p.dtype == torch.float32
        assert ((p >= 0) & (p <= 1)).all()
        assert torch.allclose(p, out["fuse"][i, 0].sigmoid())


def test_overfit_fixed_input() -> None:
    head = make_head(in_features=("c1", "p2", "p3"))
    feats = edge_features(2, 32, 32, seed=3)
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, 10, :] = 1  # a horizontal boundary
    target[0, :, 20] = 1  # and a vertical one in the first image
    target[1, :2] = 255
    present = torch.tensor([True, True])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = sum(head.loss(head(feats, (32, 32)), target, present).values()).item()
    for _ in range(30):
        loss = sum(head.loss(head(feats, (32, 32)), target, present).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = sum(head.loss(head(feats, (32, 32)), target, present).values()).item()
    assert last < 0.5 * first, (first, last)
