"""Depth and surface normal metrics against hand-computed values and numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtvision.metrics import DepthMetric, NormalsMetric, build_metric


def test_depth_hand_computed() -> None:
    m = DepthMetric()
    # Batch 1: image 0 has valid pixels (d, d*) = (1, 2), (1.9, 1), (4, 4) and one invalid;
    # image 1 is absent.
    m.update([torch.tensor([[1.0, 2.0], [1.9, 4.0]]), torch.full((2, 2), 9.0)],
             torch.tensor([[[2.0, 0.0], [1.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]),
             torch.tensor([True, False]))
    # Batch 2: (0.5, 0.5), (-1, 1) (a negative prediction), (2, 2.5) and one invalid.
    m.update([torch.tensor([[0.5, -1.0], [2.0, 2.0]])],
             torch.tensor([[[0.5, 1.0], [0.0, 2.5]]]))
    out = m.compute()
    # |e| = 1, .9, 0, 0, 2, .5; |e|/d* = .5, .9, 0, 0, 2, .2; e^2 = 1, .81, 0, 0, 4, .25.
    assert out["abs_err"] == pytest.approx(4.4 / 6)
    assert out["rel_err"] == pytest.approx(3.6 / 6)
    assert out["rmse"] == pytest.approx(math.sqrt(6.06 / 6))
    # max(d/d*, d*/d) = 2, 1.9, 1, 1, inf (d <= 0), 1.25 against 1.25, 1.5625, 1.953125
    # (strictly below).
    assert out["delta1"] == pytest.approx(2 / 6)
    assert out["delta2"] == pytest.approx(3 / 6)
    assert out["delta3"] == pytest.approx(4 / 6)


def test_depth_against_numpy_pooled_over_pixels() -> None:
    rng = np.random.default_rng(0)
    preds, targets, metric = [], [], DepthMetric()
    for _ in range(3):
        t = rng.uniform(0.5, 10, (2, 12, 16))
        t[rng.random(t.shape) < 0.25] = 0
        p = t * rng.uniform(0.6, 1.6, t.shape)
        metric.update(list(torch.from_numpy(p).float()), torch.from_numpy(t).float())
        preds.append(p.astype(np.float32).astype(np.float64))
        targets.append(t.astype(np.float32).astype(np.float64))
    p, t = np.concatenate(preds), np.concatenate(targets)
    v = t > 0
    d, g = p[v], t[v]
    ratio = np.maximum(d / g, g / d)
    ref = {"abs_err": np.abs(d - g).mean(), "rel_err": (np.abs(d - g) / g).mean(),
           "rmse": np.sqrt(((d - g) ** 2).mean()),
           **{f"delta{k}": (ratio < 1.25 ** k).mean() for k in (1, 2, 3)}}
    out = metric.compute()
    assert out.keys() == ref.keys()
    for k in ref:
        assert out[k] == pytest.approx(ref[k], rel=1e-9), k


def test_depth_empty_and_errors() -> None:
    m = build_metric("depth")
    assert isinstance(m, DepthMetric)
    assert m.compute() == dict.fromkeys(
        ("abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3"), 0.0)
    m.update([torch.ones(2, 2)], torch.zeros(1, 2, 2))  # no valid pixel
    assert m.compute()["rmse"] == 0.0
    # A [1, H, W] map is accepted; a wrong size is not.
    m.update([torch.ones(1, 2, 2)], torch.full((1, 2, 2), 2.0))
    assert m.compute()["rel_err"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        m.update([torch.ones(3, 3)], torch.ones(1, 2, 2))


def unit(deg: float) -> list[float]:
    """A unit vector in the xy plane at ``deg`` degrees from the x axis."""
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0]


def test_normals_hand_computed() -> None:
    m = NormalsMetric()
    # Batch 1, image 0 (1 x 3 pixels): errors 0 (target not unit length), 90, invalid;
    # image 1 is absent.
    pred = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]).T.reshape(3, 1, 3)
    target = torch.tensor([[2.0, 0, 0], [1.0, 0, 0], [0, 0, 0]]).T.reshape(3, 1, 3)
    m.update([pred, -pred], torch.stack([target, target]), torch.tensor([True, False]))
    # Batch 2: errors 180, 45, 20 (the prediction scaled by 3: normalised first).
    pred2 = torch.tensor([[-1.0, 0, 0], [1.0, 1.0, 0], [3 * x for x in unit(20)]]).T
    target2 = torch.tensor([[1.0, 0, 0], unit(90), [1.0, 0, 0]]).T
    m.update([pred2.reshape(3, 1, 3)], target2.reshape(1, 3, 1, 3))
    out = m.compute()
    # Errors 0, 20, 45, 90, 180.
    assert out["mean_angle"] == pytest.approx(335 / 5)
    assert out["median_angle"] == pytest.approx(45.0, abs=1e-3)
    assert out["within_11.25"] == pytest.approx(1 / 5)
    assert out["within_22.5"] == pytest.approx(2 / 5)
    assert out["within_30"] == pytest.approx(2 / 5)
    # Adding 5 degrees, an even count: numpy's median averages the middle two (20 and 45).
    m.update([torch.tensor(unit(5)).reshape(3, 1, 1)], torch.tensor([1.0, 0, 0]).reshape(
        1, 3, 1, 1))
    assert m.compute()["median_angle"] == pytest.approx(32.5, abs=1e-3)


def test_normals_against_numpy() -> None:
    rng = np.random.default_rng(1)
    metric, errors = NormalsMetric(), []
    for _ in range(3):
        t = rng.normal(size=(2, 3, 10, 14))
        t[:, :, rng.random((10, 14)) < 0.2] = 0
        p = t + rng.normal(scale=0.6, size=t.shape)
        metric.update(list(torch.from_numpy(p)), torch.from_numpy(t))
        valid = np.abs(t).sum(1) > 0
        pn = p / np.linalg.norm(p, axis=1, keepdims=True)
        tn = t / np.where(valid, np.linalg.norm(t, axis=1), 1)[:, None]
        cos = np.clip((pn * tn).sum(1)[valid], -1, 1)
        errors.append(np.degrees(np.arccos(cos)))
    e = np.concatenate(errors)
    out = metric.compute()
    assert out["mean_angle"] == pytest.approx(e.mean(), rel=1e-9)
    assert out["median_angle"] == pytest.approx(np.median(e), abs=1e-3)
    for thr in (11.25, 22.5, 30):
        assert out[f"within_{thr:g}"] == pytest.approx((e < thr).mean())


def test_normals_empty_reset_and_errors() -> None:
    m = build_metric("normals")
    assert isinstance(m, NormalsMetric)
    keys = ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30")
    assert m.compute() == dict.fromkeys(keys, 0.0)
    m.update([torch.ones(3, 2, 2)], torch.ones(1, 3, 2, 2))
    assert m.compute()["within_11.25"] == 1.0
    m.reset()
    assert m.compute()["mean_angle"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        m.update([torch.ones(3, 2, 2)], torch.ones(1, 3, 4, 4))
