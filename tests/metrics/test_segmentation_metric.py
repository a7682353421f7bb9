import math

import numpy as np
import pytest
import torch

from mtvision.metrics import SegmentationMetric, build_metric, iou_from_confusion
from mtvision.metrics.segmentation import format_per_class_table, segmentation_scores
from mtvision.registry import ConfigError

# target  0 0 0 0 1 1 1 1   ->  cm[target, pred] = [[3, 1, 0, 0],
# pred    0 0 0 1 1 1 2 2                           [0, 2, 2, 0],
#                                                   [0, 0, 0, 0],
#                                                   [0, 0, 0, 0]]
TARGET = torch.tensor([[[0, 0, 0, 0], [1, 1, 1, 1]]])
PRED = torch.tensor([[0, 0, 0, 1], [1, 1, 2, 2]])
# IoU: class 0 3/(4+3-3) = 3/4, class 1 2/(4+3-2) = 2/5, class 2 0/2 = 0, class 3 no union.
EXPECTED_MIOU = (3 / 4 + 2 / 5 + 0) / 3
EXPECTED_ACC = 5 / 8
# Class accuracy: class 0 3/4, class 1 2/4 (classes 2, 3 have no gt) -> mAcc 5/8.
# fwIoU: gt frequencies 4/8, 4/8 -> 1/2 * 3/4 + 1/2 * 2/5 = 0.575.
EXPECTED_MACC = (3 / 4 + 2 / 4) / 2
EXPECTED_FWIOU = 0.5 * 0.75 + 0.5 * 0.4


def test_perfect_prediction_scores_one():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 16, 16), generator=g)
    preds = list(target.clone())
    target[:, :3] = 255
    m = SegmentationMetric(5)
    m.update(preds, target, torch.tensor([True, True]))
    out = m.compute()
    assert out["mIoU"] == 1.0 and out["pixel_acc"] == 1.0
    assert out["mAcc"] == 1.0 and out["fwIoU"] == pytest.approx(1.0)
    assert all(v == 1.0 for v in out["per_class_IoU"].values())
    assert all(v == 1.0 for v in out["per_class_acc"].values())


def test_known_confusion_matrix():
    m = SegmentationMetric(4, class_names=["a", "b", "c", "d"])
    m.update([PRED], TARGET, torch.tensor([True]))
    assert m.table().splitlines()[2].split() == ["a", "75.00", "75.00"]
    expected_cm = np.array([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.confusion_matrix, expected_cm)
    out = m.compute()
    assert out["mIoU"] == pytest.approx(EXPECTED_MIOU)
    assert out["pixel_acc"] == pytest.approx(EXPECTED_ACC)
    per = out["per_class_IoU"]
    assert per["a"] == pytest.approx(0.75) and per["b"] == pytest.approx(0.4) and per["c"] == 0.0
    assert math.isnan(per["d"])  # absent from gt and predictions: excluded from the mean
    assert out["mAcc"] == pytest.approx(EXPECTED_MACC)
    assert out["fwIoU"] == pytest.approx(EXPECTED_FWIOU)
    acc = out["per_class_acc"]
    assert acc["a"] == pytest.approx(0.75) and acc["b"] == pytest.approx(0.5)
    assert math.isnan(acc["c"]) and math.isnan(acc["d"])  # no gt pixels: no accuracy


def test_scores_match_an_independent_computation():
    # Per class from boolean masks, without a confusion matrix; classes 0..5, 255 ignored,
    # class 5 never in the ground truth (but predicted), class 4 in neither.
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (3, 20, 24), generator=g)
    target[:, :2] = 255
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target,
                       torch.randint(0, 4, target.shape, generator=g))
    pred[pred == 255] = 0
    pred[0, 5, :6] = 5
    m = SegmentationMetric(6)
    m.update(list(pred), target)
    out = m.compute()

    t, p = target.numpy(), pred.numpy()
    keep = t != 255
    t, p = t[keep], p[keep]
    ious, accs, freqs = [], [], []
    for c in range(6):
        inter, union = np.sum((t == c) & (p == c)), np.sum((t == c) | (p == c))
        ious.append(inter / union if union else np.nan)
        accs.append(inter / np.sum(t == c) if np.sum(t == c) else np.nan)
        freqs.append(np.sum(t == c) / t.size)
    ious, accs, freqs = map(np.array, (ious, accs, freqs))
    np.testing.assert_allclose(list(out["per_class_IoU"].values()), ious)
    np.testing.assert_allclose(list(out["per_class_acc"].values()), accs)
    assert out["mIoU"] == pytest.approx(np.nanmean(ious))
    assert out["mAcc"] == pytest.approx(np.nanmean(accs))
    assert out["fwIoU"] == pytest.approx(np.sum(freqs[:4] * ious[:4]))
    assert out["pixel_acc"] == pytest.approx(np.mean(t == p))
    assert out["per_class_IoU"]["5"] == 0.0 and math.isnan(out["per_class_acc"]["5"])


def test_per_class_table():
    cm = np.array([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    result = segmentation_scores(cm, ["road", "car", "sky", "tree"])
    lines = format_per_class_table(result).splitlines()
    assert lines[0].split() == ["class", "IoU", "acc"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines if not ln.startswith("-")}
    assert rows["road"] == ["75.00", "75.00"] and rows["car"] == ["40.00", "50.00"]
    assert rows["sky"] == ["0.00", "-"] and rows["tree"] == ["-", "-"]
    assert rows["mean"] == ["38.33", "62.50"]
    assert len({len(ln) for ln in lines}) == 1  # aligned columns
    only = format_per_class_table(result, ["car"], digits=1).splitlines()
    assert [ln.split()[0] for ln in only if not ln.startswith("-")] == ["class", "car", "mean"]
    with pytest.raises(KeyError, match="bus"):
        format_per_class_table(result, ["bus"])


def test_iou_from_confusion_pure_function():
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    ious, miou, acc = iou_from_confusion(cm)
    np.testing.assert_allclose(ious, [0.75, 0.4, 0.0])
    assert miou == pytest.approx(EXPECTED_MIOU)
    assert acc == pytest.approx(EXPECTED_ACC)
    assert iou_from_confusion(np.zeros((2, 2)))[1:] == (0.0, 0.0)
    empty = segmentation_scores(np.zeros((2, 2)))
    assert (empty["mIoU"], empty["mAcc"], empty["fwIoU"], empty["pixel_acc"]) == (0, 0, 0, 0)


def test_ignore_pixels_are_skipped():
    target = torch.cat([TARGET, torch.full((1, 2, 4), 255)], dim=2)  # extra ignored columns
    pred = torch.cat([PRED, torch.full((2, 4), 3)], dim=1)  # wrong class on ignored pixels
    m = SegmentationMetric(4)
    m.update([pred], target, torch.tensor([True]))
    assert m.confusion_matrix.sum() == 8
    assert m.compute()["mIoU"] == pytest.approx(EXPECTED_MIOU)


def test_present_mask_and_accumulation_and_reset():
    target = torch.cat([TARGET, TARGET])
    wrong = torch.full((2, 4), 3)
    m = SegmentationMetric(4)
    m.update([PRED, wrong], target, torch.tensor([True, False]))
    m.update([PRED, wrong], target, torch.tensor([False, False]))
    assert m.num_samples == 1
    assert m.compute()["mIoU"] == pytest.approx(EXPECTED_MIOU)
    m.update([PRED], TARGET, torch.tensor([True]))
    assert m.confusion_matrix.sum() == 16  # two images accumulated, same ratios
    assert m.compute()["pixel_acc"] == pytest.approx(EXPECTED_ACC)
    m.reset()
    assert m.confusion_matrix.sum() == 0 and m.compute()["mIoU"] == 0.0


def test_out_of_range_prediction_is_an_error():
    m = SegmentationMetric(2)
    with pytest.raises(ValueError):
        m.update([torch.full((2, 4), 7)], torch.zeros(1, 2, 4, dtype=torch.long), None)


def test_build_metric_seg():
    m = build_metric("seg", class_names=["bg", "fg"])
    assert isinstance(m, SegmentationMetric) and m.num_classes == 2
    with pytest.raises(ConfigError, match="did you mean 'seg'"):
        build_metric("segg", num_classes=2)
