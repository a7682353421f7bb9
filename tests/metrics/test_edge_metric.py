import time

import numpy as np
import pytest
import torch

from mtvision.metrics import EdgeMetric, build_metric, edge_ods_ois
from mtvision.metrics.edge import _LUTS, thin_stack

H = W = 128  # tolerance 0.0075 * diagonal = 1.36 px


def vertical_lines(xs: list[int], y0: int = 10, y1: int = 110) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    for x in xs:
        m[y0:y1, x] = True
    return m


GT = vertical_lines([20, 60, 100])


def scores(pred: np.ndarray, gt: np.ndarray = GT) -> dict[str, float]:
    return edge_ods_ois([pred.astype(np.float32)], [[gt]])


def test_thinning_matches_skimage():
    from skimage.morphology import thin  # the reference implementation (dev dependency)

    assert not _LUTS[0][255] and not _LUTS[1][255]  # interior pixels are never deleted
    rng = np.random.default_rng(0)
    masks = rng.random((12, 40, 50)) > rng.uniform(0.1, 0.9, (12, 1, 1))
    masks[0] = False
    masks[1, 5:30, 5:45] = True  # a thick block
    np.testing.assert_array_equal(thin_stack(masks), np.stack([thin(m) for m in masks]))


def test_perfect_prediction_scores_one():
    assert scores(GT) == pytest.approx({"ODS": 1.0, "OIS": 1.0, "AP": 1.0})


def test_one_pixel_offset_is_within_tolerance():
    out = scores(vertical_lines([21, 61, 101]))
    assert out == pytest.approx({"ODS": 1.0, "OIS": 1.0, "AP": 1.0})


def test_five_pixel_offset_scores_zero():
    out = scores(vertical_lines([25, 65, 105]))
    assert out == pytest.approx({"ODS": 0.0, "OIS": 0.0, "AP": 0.0})


def test_empty_prediction_scores_zero():
    assert scores(np.zeros((H, W))) == {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}


def test_thick_soft_prediction_is_thinned():
    # A 5-px wide ridge around each line: thinning brings it back to the centre line.
    pred = np.zeros((H, W), dtype=np.float32)
    for x in (20, 60, 100):
        for dx, v in ((-2, 0.3), (-1, 0.6), (0, 0.9), (1, 0.6), (2, 0.3)):
            pred[10:110, x + dx] = v
    assert scores(pred)["ODS"] > 0.95


def test_recall_counts_are_summed_over_annotators():
    # Matches annotator 1 exactly and is 5 px from annotator 2: precision 1, recall 1/2.
    a1, a2 = GT, vertical_lines([25, 65, 105])
    out = edge_ods_ois([GT.astype(np.float32)], [[a1, a2]])
    assert out["ODS"] == pytest.approx(2 * 0.5 / 1.5)


def test_ods_uses_one_threshold_ois_one_per_image():
    # Image A: true line at 0.8 and a false line at 0.4; image B: true line at 0.3 only.
    # t < 0.3: P = 200/300, R = 1 -> F = 0.8; 0.4 <= t < 0.8: P = 1, R = 1/2 -> F = 2/3;
    # 0.3 <= t < 0.4: P = R = 1/2. So ODS = 0.8, while each image alone reaches F = 1.
    gt_a, gt_b = vertical_lines([30]), vertical_lines([70])
    pred_a = 0.8 * gt_a + 0.4 * vertical_lines([100])
    pred_b = 0.3 * gt_b
    out = edge_ods_ois([pred_a, pred_b], [[gt_a], [gt_b]])
    assert out["ODS"] == pytest.approx(0.8)
    assert out["OIS"] == pytest.approx(1.0)


def test_edge_metric_ignore_and_present():
    target = torch.from_numpy(GT.astype(np.int64))
    target[:, 110:] = 255
    pred = torch.from_numpy(GT.astype(np.float32))
    pred[:, 115] = 1.0  # a false edge, but in the ignored region
    wrong = torch.from_numpy(vertical_lines([40]).astype(np.float32))
    m = EdgeMetric()
    m.update([pred, wrong], torch.stack([target, target]), torch.tensor([True, False]))
    assert m.num_samples == 1
    assert m.compute() == pytest.approx({"ODS": 1.0, "OIS": 1.0, "AP": 1.0})
    m.reset()
    assert m.compute() == {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}


def test_edge_metric_speed_smoke():
    # Soft 3-px ridges: 8 images at 99 thresholds must stay well under a second or two.
    rng = np.random.default_rng(0)
    preds = []
    for _ in range(8):
        pred = 0.05 * rng.random((H, W))
        for x in rng.integers(5, W - 5, 4):
            pred[:, x - 1 : x + 2] = np.maximum(pred[:, x - 1 : x + 2], [0.5, 0.9, 0.5])
        preds.append(torch.from_numpy(pred.astype(np.float32)))
    target = torch.stack([(p > 0.8).long() for p in preds])
    m = build_metric("edge")
    start = time.perf_counter()
    m.update(preds, target, torch.ones(8, dtype=torch.bool))
    out = m.compute()
    assert time.perf_counter() - start < 5.0
    assert out["ODS"] > 0.95
