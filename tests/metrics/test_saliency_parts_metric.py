"""Saliency maxF / mIoU over thresholds (mtvision.metrics.saliency) against hand-computed values
and scikit-learn; human parts as segmentation over the images that carry part labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import fbeta_score, jaccard_score, precision_recall_curve

from mtvision.metrics import SaliencyMetric, build_metric
from mtvision.metrics.saliency import default_thresholds


def test_default_thresholds_are_invpts_grid() -> None:
    np.testing.assert_allclose(default_thresholds(19), np.arange(0.05, 0.951, 0.05))
    with pytest.raises(ValueError):
        SaliencyMetric(thresholds=[0.0, 0.5])
    with pytest.raises(ValueError):
        SaliencyMetric(beta2=0)


def test_hand_computed_case() -> None:
    # Image 1: probabilities 0.9 0.6 0.3 0.1, truth 1 1 0 0.
    # Image 2: probabilities 0.8 0.4 0.2 0.7, truth 0 1 0 255 (0.7 is ignored).
    preds = [torch.tensor([[0.9, 0.6], [0.3, 0.1]]), torch.tensor([[0.8, 0.4], [0.2, 0.7]])]
    target = torch.tensor([[[1, 1], [0, 0]], [[0, 1], [0, 255]]])
    # Valid pixels: img1 (0.9,1) (0.6,1) (0.3,0) (0.1,0); img2 (0.8,0) (0.4,1) (0.2,0).
    m = SaliencyMetric(thresholds=[0.25, 0.5, 0.75], beta2=0.3)
    m.update(preds, target)
    # t=0.25: predicted {0.9,0.6,0.3 | 0.8,0.4}: TP 3, PP 5, AP 3 -> P .6 R 1
    # t=0.5 : {0.9,0.6 | 0.8}: TP 2, PP 3 -> P 2/3 R 2/3
    # t=0.75: {0.9 | 0.8}: TP 1, PP 2 -> P .5 R 1/3
    def f(p, r):
        return 1.3 * p * r / (0.3 * p + r)
    expect_f = [f(0.6, 1.0), f(2 / 3, 2 / 3), f(0.5, 1 / 3)]  # 0.661, 0.667, 0.371
    # Per-image IoU: img1: t=.25 2/3, t=.5 1, t=.75 1/2; img2: t=.25 1/2, t=.5 0, t=.75 0.
    expect_iou = [(2 / 3 + 1 / 2) / 2, (1 + 0) / 2, (1 / 2 + 0) / 2]
    out = m.compute()
    assert out["maxF"] == pytest.approx(max(expect_f))
    assert out["maxF"] == pytest.approx(2 / 3)
    assert out["maxF_threshold"] == pytest.approx(0.5)
    assert out["mIoU"] == pytest.approx(max(expect_iou))


def test_empty_truth_and_prediction_is_iou_one_and_present_filter() -> None:
    m = SaliencyMetric(thresholds=[0.5])
    preds = [torch.zeros(3, 3), torch.ones(3, 3)]
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    m.update(preds, target, present=torch.tensor([True, False]))
    out = m.compute()
    assert m.num_samples == 1
    assert out["mIoU"] == 1.0 and out["maxF"] == 0.0


def test_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    probs = [rng.random((17, 23)) for _ in range(4)]
    truths = []
    for p in probs:
        # Truth correlated with the prediction, with ignored pixels.
        t = (p + rng.normal(0, 0.3, p.shape) > 0.6).astype(np.int64)
        t[rng.random(p.shape) < 0.1] = 255
        truths.append(t)
    m = SaliencyMetric()  # 19 thresholds, beta^2 = 0.3
    for part in (slice(0, 2), slice(2, 4)):
        m.update([torch.from_numpy(p).float() for p in probs[part]],
                 torch.from_numpy(np.stack(truths[part])))
    out = m.compute()

    thr = np.arange(1, 20) / 20
    valid = [t != 255 for t in truths]
    y = np.concatenate([t[v] for t, v in zip(truths, valid, strict=True)])
    s = np.concatenate([p[v] for p, v in zip(probs, valid, strict=True)]).astype(np.float32)
    f = [fbeta_score(y, s > t, beta=math.sqrt(0.3), zero_division=0) for t in thr]
    assert out["maxF"] == pytest.approx(max(f), abs=1e-9)
    # The same from the precision-recall curve: ``s > t`` is ``s >= the next score above t``.
    prec, rec, cuts = precision_recall_curve(y, s)
    f_curve = []
    for t in thr:
        i = int(np.searchsorted(cuts, np.float32(t), side="right"))
        p, r = prec[i], rec[i]
        f_curve.append(0.0 if p + r == 0 else 1.3 * p * r / (0.3 * p + r))
    assert out["maxF"] == pytest.approx(max(f_curve), abs=1e-9)
    ious = [[jaccard_score(t[v], p[v].astype(np.float32) > c, zero_division=1.0)
             for t, p, v in zip(truths, probs, valid, strict=True)] for c in thr]
    assert out["mIoU"] == pytest.approx(max(np.mean(ious, axis=1)), abs=1e-9)


def test_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(1)
    preds = [torch.from_numpy(rng.random((8, 8))).float() for _ in range(4)]
    target = torch.from_numpy((rng.random((4, 8, 8)) > 0.5).astype(np.int64))
    whole, a, b = SaliencyMetric(), SaliencyMetric(), SaliencyMetric()
    whole.update(preds, target)
    a.update(preds[:1], target[:1])
    b.update(preds[1:], target[1:])
    a.merge(b.results, b.num_samples)
    assert a.compute() == whole.compute()


def test_parts_are_scored_on_labelled_images_only() -> None:
    names = ["background", "head", "torso", "uarm", "larm", "uleg", "lleg"]
    metric = build_metric("parts", class_names=names)
    target = torch.zeros(2, 2, 2, dtype=torch.long)
    target[0] = torch.tensor([[1, 2], [0, 255]])
    preds = [torch.tensor([[1, 1], [0, 3]]), torch.tensor([[6, 6], [6, 6]])]
    metric.update(preds, target, present=torch.tensor([True, False]))
    out = metric.compute()
    # Image 2 (no people) is left out. Image 1: background IoU 1, head 1/2, torso 0; the other
    # parts appear nowhere (undefined, out of the mean).
    assert out["mIoU"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert math.isnan(out["per_class_IoU"]["lleg"])
