"""Evaluation helpers: summary score, the results table, the run log and its plot."""

import json

import pytest

from mtvision.engine.evaluator import format_table, summary_score
from mtvision.engine.logger import RunLogger, plot_training_curves, read_jsonl

RESULTS = {"det": {"mAP": 0.4, "mAP50": 0.7}, "seg": {"mIoU": 0.6, "pixel_acc": 0.9,
                                                     "per_class_IoU": {"a": 0.5}},
           "edge": {"ODS": 0.8, "OIS": 0.85, "AP": 0.7}, "cls": {"top1": 0.9}}


def test_summary_score_is_mean_of_headline_metrics():
    assert summary_score(RESULTS) == pytest.approx((0.4 + 0.6 + 0.8 + 0.9) / 4)
    assert summary_score(RESULTS, "det.mAP50") == pytest.approx(0.7)


def test_table_has_one_row_per_scalar_metric():
    lines = format_table(RESULTS, per_class=False).splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    rows = [line.split() for line in lines[2:]]
    assert ["seg", "mIoU", "0.6000"] in rows
    assert len(rows) == 8  # per_class_IoU (a dict) is not a row
    nested = {"det": {"mAP": 0.4, "coco": {"AP": 0.25, "per_class": {"x": 0.1}}}}
    assert ["det", "coco.AP", "0.2500"] in [r.split() for r in format_table(nested).splitlines()]


def test_table_ends_with_the_per_class_segmentation_table():
    text = format_table(RESULTS)
    tail = text.split("seg per class:")[1].splitlines()
    # class a: IoU 50.00 %; the mean row repeats mIoU (60.00 %).
    assert ["a", "50.00", "-"] in [r.split() for r in tail]
    assert ["mean", "60.00", "-"] in [r.split() for r in tail]


def test_log_and_curves(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False)
    for i in range(1, 6):
        log.log({"type": "train", "iter": i, "losses": {"det": 1.0 / i, "seg": 2.0 / i}})
    log.log({"type": "eval", "iter": 5, "metrics": RESULTS})
    with open(log.path, "a") as f:
        f.write('{"type": "train", "iter": 6, "los')  # a line cut by a kill
    records = read_jsonl(log.path)
    assert len(records) == 6 and records[-1]["type"] == "eval"
    assert json.loads(log.path.read_text().splitlines()[0])["losses"]["seg"] == 2.0
    png = plot_training_curves(log.path, tmp_path / "curves.png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
