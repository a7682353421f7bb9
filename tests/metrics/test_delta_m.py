"""Delta_m per task and per metric on a worked example with hand-computed numbers, the declared
metric directions and the error cases."""

from __future__ import annotations

import math

import pytest

from mtvision.metrics import METRIC_DIRECTION, delta_m, metric_direction

RESULTS = {
    "seg": {"mIoU": 0.55, "pixel_acc": 0.80, "mAcc": 0.10, "per_class_IoU": {"a": 0.5}},
    "depth": {"abs_err": 0.45, "rel_err": 0.20, "rmse": 9.0},
    "cls": {"top1": 0.90},
    "edge": {"ODS": 0.10, "OIS": 0.10, "AP": 0.10},  # an auxiliary task: left out
}
BASELINES = {
    "seg": {"mIoU": 0.50, "pixel_acc": 0.80, "mAcc": 0.90},
    "depth": {"abs_err": 0.50, "rel_err": 0.16, "rmse": 1.0},
    "cls": {"top1": 0.80},
    "edge": {"ODS": 0.80, "OIS": 0.80, "AP": 0.80},
    "normals": {"mean_angle": 20.0},  # no multi-task result: not compared
}


def test_worked_example() -> None:
    out = delta_m(RESULTS, BASELINES, exclude=["edge"])
    # seg (higher better): mIoU (0.55 - 0.50) / 0.50 = +10 %, pixel_acc 0 %      -> mean +5
    # depth (lower better): abs_err -(0.45 - 0.50) / 0.50 = +10 %,
    #                       rel_err -(0.20 - 0.16) / 0.16 = -25 %                -> mean -7.5
    # cls: top1 (0.90 - 0.80) / 0.80 = +12.5 %                                   -> +12.5
    # Defaults leave out seg mAcc and depth rmse (not in the usual sets).
    assert out["tasks"] == pytest.approx({"seg": 5.0, "depth": -7.5, "cls": 12.5})
    assert out["per_task"] == pytest.approx((5.0 - 7.5 + 12.5) / 3)
    assert out["per_metric"] == pytest.approx((10 + 0 + 10 - 25 + 12.5) / 5)
    assert out["metrics"] == {"seg": ["mIoU", "pixel_acc"], "depth": ["abs_err", "rel_err"],
                              "cls": ["top1"]}
    # Not excluding the auxiliary edge task changes the result: each edge metric is -87.5 %.
    with_edge = delta_m(RESULTS, BASELINES)
    assert with_edge["tasks"]["edge"] == pytest.approx(-87.5)
    assert with_edge["per_task"] == pytest.approx((5.0 - 7.5 + 12.5 - 87.5) / 4)


def test_chosen_metrics() -> None:
    out = delta_m(RESULTS, BASELINES, exclude=("edge",),
                  metrics={"seg": ["mIoU", "mAcc"], "depth": ["rmse"]})
    # seg: +10 and (0.1 - 0.9) / 0.9 = -88.9 %; depth rmse -(9 - 1) / 1 = -800 %; cls default.
    seg = (10 + (0.1 - 0.9) / 0.9 * 100) / 2
    assert out["tasks"] == pytest.approx({"seg": seg, "depth": -800.0, "cls": 12.5})
    with pytest.raises(ValueError, match="no direction"):
        delta_m(RESULTS, BASELINES, metrics={"seg": ["per_class_IoU"]})
    with pytest.raises(ValueError, match="not among the baselines"):
        delta_m({"seg": {"fwIoU": 0.3}}, BASELINES, metrics={"seg": ["fwIoU"]})


def test_identical_results_give_zero() -> None:
    out = delta_m(BASELINES, BASELINES)
    assert out["per_task"] == 0.0 and out["per_metric"] == 0.0
    assert set(out["tasks"]) == {"seg", "depth", "cls", "edge", "normals"}


def test_errors() -> None:
    with pytest.raises(ValueError, match="no metric"):
        delta_m({"det": {"mAP": 0.3}}, BASELINES)
    with pytest.raises(ValueError, match="no metric"):
        delta_m(RESULTS, BASELINES, exclude=["seg", "depth", "cls", "edge"])
    with pytest.raises(ValueError, match="baseline of 'cls.top1' is 0"):
        delta_m({"cls": {"top1": 0.5}}, {"cls": {"top1": 0.0}})
    with pytest.raises(ValueError, match="not finite"):
        delta_m({"cls": {"top1": math.nan}}, {"cls": {"top1": 0.5}})


def test_directions_declared_once() -> None:
    assert metric_direction("depth", "abs_err") == "lower"
    assert metric_direction("depth", "delta1") == "higher"
    assert metric_direction("normals", "median_angle") == "lower"
    assert metric_direction("normals", "within_30") == "higher"
    assert metric_direction("seg", "nonsense") is None
    assert {d for table in METRIC_DIRECTION.values() for d in table.values()} == {
        "higher", "lower"}
