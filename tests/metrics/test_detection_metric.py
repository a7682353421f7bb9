import math

import pytest
import torch

from mtvision.metrics import DetectionMetric, build_metric


def gt(boxes: list[list[float]], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long)}


def det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels, dtype=torch.long)}


ALL = torch.tensor([True])


def test_perfect_predictions():
    targets = [gt([[10, 10, 60, 80], [100, 20, 180, 90]], [0, 2]), gt([[5, 5, 50, 50]], [1])]
    preds = [det([[10, 10, 60, 80], [100, 20, 180, 90]], [0.9, 0.8], [0, 2]),
             det([[5, 5, 50, 50]], [0.7], [1])]
    m = DetectionMetric(3, class_names=["a", "b", "c"])
    m.update(preds, targets, torch.tensor([True, True]))
    out = m.compute()
    assert out["mAP"] == pytest.approx(1.0) and out["mAP50"] == pytest.approx(1.0)
    assert out["per_class"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})


def test_shifted_box_counts_at_low_iou_thresholds_only():
    # Shift by 24 px: IoU = 76*100 / (124*100) = 0.613 -> a hit at IoU .50, .55, .60 and a
    # miss at .65 ... .95, so AP is 1 at 3 of the 10 thresholds and 0 at the others.
    m = DetectionMetric(1)
    m.update([det([[24, 0, 124, 100]], [0.9], [0])], [gt([[0, 0, 100, 100]], [0])], ALL)
    out = m.compute()
    assert out["mAP50"] == pytest.approx(1.0)
    assert out["mAP"] == pytest.approx(3 / 10)


def test_wrong_class_scores_zero():
    m = DetectionMetric(2)
    m.update([det([[0, 0, 100, 100]], [0.9], [1])], [gt([[0, 0, 100, 100]], [0])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0
    assert out["per_class"]["0"] == 0.0 and math.isnan(out["per_class"]["1"])  # 1: no gt


def test_no_predictions_at_all():
    m = DetectionMetric(2)
    m.update([det([], [], [])], [gt([[0, 0, 10, 10]], [0])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0 and out["per_class"]["0"] == 0.0


def test_false_positive_on_image_without_gt():
    # Image 2 has no boxes; its detection outranks the true positive of image 1, so at
    # recall 1 precision is 1/2 and COCO's interpolated precision is 1/2 at every recall.
    preds = [det([[0, 0, 50, 50]], [0.5], [0]), det([[0, 0, 50, 50]], [0.9], [0])]
    targets = [gt([[0, 0, 50, 50]], [0]), gt([], [])]
    m = DetectionMetric(1)
    m.update(preds, targets, torch.tensor([True, True]))
    assert m.compute()["mAP50"] == pytest.approx(0.5)
    # With the false positive ranked last precision stays 1 up to full recall.
    preds[1]["scores"] = torch.tensor([0.1])
    m.reset()
    m.update(preds, targets, torch.tensor([True, True]))
    assert m.compute()["mAP"] == pytest.approx(1.0)


def test_no_ground_truth_in_dataset():
    m = DetectionMetric(2)
    m.update([det([[0, 0, 10, 10]], [0.9], [0])], [gt([], [])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0
    assert DetectionMetric(2).compute()["mAP"] == 0.0  # nothing seen


def test_present_mask_excludes_images():
    preds = [det([[0, 0, 50, 50]], [0.9], [0]), det([[200, 200, 220, 220]], [0.99], [0])]
    targets = [gt([[0, 0, 50, 50]], [0]), gt([[0, 0, 50, 50]], [0])]
    m = DetectionMetric(1)
    m.update(preds, targets, torch.tensor([True, False]))
    assert m.num_samples == 1
    assert m.compute()["mAP"] == pytest.approx(1.0)


def test_compute_prints_nothing(capsys):
    m = DetectionMetric(1)
    m.update([det([[0, 0, 50, 50]], [0.9], [0])], [gt([[0, 0, 50, 50]], [0])], ALL)
    m.compute()
    assert capsys.readouterr().out == ""


def test_build_metric_det():
    m = build_metric("det", num_classes=2, class_names=["x", "y"], multi_label=False)
    assert isinstance(m, DetectionMetric) and m.class_names == ["x", "y"]
