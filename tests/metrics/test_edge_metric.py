"""Edge metric: hand-computed cases of the BSDS protocol (exact and approximate matching).

The correspondence joins unmatched pixels through a random outlier graph of degree 6; with at
most 6 boundary pixels per map that graph is complete, so the matching of the small maps below
is the plain optimum and the expected counts can be worked out by hand.
"""

import cv2
import numpy as np
import pytest
import torch

from mtvision.metrics import EdgeMetric, build_metric, edge_ods_ois
from mtvision.metrics.edge import (
    _LUTS,
    area_pr,
    benchmark_from_counts,
    bsds_thresholds,
    edge_benchmark,
    edge_nms,
    image_counts,
    scores_from_counts,
    thin_stack,
)
from mtvision.registry import ConfigError

S = 32  # image side; diagonal 45.25 px


def segment(x: int, y0: int = 10, n: int = 5, size: int = S) -> np.ndarray:
    """A vertical boundary segment of ``n`` pixels in column ``x``."""
    m = np.zeros((size, size), dtype=bool)
    m[y0 : y0 + n, x] = True
    return m


def counts_of(pred: np.ndarray, gts: list[np.ndarray], max_dist: float, mode: str = "exact"
              ) -> tuple[float, ...]:
    """(cntR, sumR, cntP, sumP) at the single threshold 0.5."""
    c = image_counts(pred.astype(np.float32), gts, np.array([0.5]), max_dist, mode=mode)
    return tuple(c[0])


# --- thinning -----------------------------------------------------------------------------


def test_thinning_matches_skimage():
    from skimage.morphology import thin  # the reference implementation (dev dependency)

    assert not _LUTS[0][255] and not _LUTS[1][255]  # interior pixels are never deleted
    rng = np.random.default_rng(0)
    masks = rng.random((12, 40, 50)) > rng.uniform(0.1, 0.9, (12, 1, 1))
    masks[0] = False
    masks[1, 5:30, 5:45] = True  # a thick block
    np.testing.assert_array_equal(thin_stack(masks), np.stack([thin(m) for m in masks]))


# --- matching: hand-computed counts -------------------------------------------------------


def test_shift_within_and_beyond_tolerance():
    gt = segment(10)
    # max_dist 0.0075 -> d = 0.34 px: a 1-px shift is not matched.
    assert counts_of(segment(11), [gt], 0.0075) == (0, 5, 0, 5)
    # 0.03 -> d = 1.358 px: matched one to one.
    assert counts_of(segment(11), [gt], 0.03) == (5, 5, 5, 5)
    # Isolated pixels shifted diagonally are sqrt(2) = 1.414 px away: outside 1.358 px, inside
    # 0.0315 -> 1.425 px.
    points = np.zeros((S, S), dtype=bool)
    points[[5, 5, 20], [5, 20, 12]] = True
    shifted = np.roll(points, (1, 1), axis=(0, 1))
    assert counts_of(shifted, [points], 0.03) == (0, 3, 0, 3)
    assert counts_of(shifted, [points], 0.0315) == (3, 3, 3, 3)


def test_matching_is_one_to_one_in_exact_mode_only():
    # Boundary in column 10, predicted lines in columns 9 and 11, all within 1.358 px: each
    # boundary pixel takes one predicted pixel, the other 5 are false positives (P = 1/2), but
    # by distance alone every predicted pixel is near the boundary (P = 1).
    gt, pred = segment(10), segment(9) | segment(11)
    exact = counts_of(pred, [gt], 0.03, "exact")
    approx = counts_of(pred, [gt], 0.03, "approx")
    assert exact == (5, 5, 5, 10)
    assert approx == (5, 5, 10, 10)
    out_e = edge_ods_ois([pred.astype(np.float32)], [[gt]], max_dist=0.03)
    out_a = edge_ods_ois([pred.astype(np.float32)], [[gt]], max_dist=0.03, mode="approx")
    assert out_e["ODS"] == pytest.approx(2 / 3) and out_a["ODS"] == pytest.approx(1.0)


def test_recall_summed_over_annotators_precision_matched_in_any():
    # Annotator 1 is the prediction itself, annotator 2 lies 5 px away: recall (5 + 0) / 10,
    # precision 5 / 5 (every predicted pixel is matched in annotator 1).
    a1, a2 = segment(10), segment(15)
    assert counts_of(a1, [a1, a2], 0.03) == (5, 10, 5, 5)
    # Half the prediction near each annotator: matched in one or the other, so P = 1.
    pred = segment(10, n=3) | segment(15, y0=13, n=2)
    assert counts_of(pred, [a1, a2], 0.03) == (5, 10, 5, 5)


def test_binarisation_uses_greater_or_equal():
    pred = segment(10).astype(np.float64) * 0.5  # exactly at the threshold 0.5
    c = image_counts(pred, [segment(10)], np.array([0.5]), 0.03)
    assert tuple(c[0]) == (5, 5, 5, 5)


def test_thick_soft_prediction_is_thinned():
    # A 3-px wide ridge (0.5, 0.85, 0.5): at t <= 0.5 the 3x6 block thins to part of its
    # centre column, at 0.6 .. 0.8 only the centre column is left; both match the boundary.
    gt = segment(16, y0=6, n=6)
    pred = np.zeros((S, S))
    pred[6:12, 15:18] = [0.5, 0.85, 0.5]
    ts = bsds_thresholds(9)
    edges = thin_stack(pred[None] >= ts[:5, None, None])
    assert edges.any(axis=(1, 2)).all() and not edges[:, :, [15, 17]].any()
    c = image_counts(pred, [gt], ts, 0.0075)
    assert (c[:, 2] == c[:, 3]).all()  # every thinned pixel is matched
    assert c[5:8].tolist() == [[6, 6, 6, 6]] * 3 and c[8].tolist() == [0, 6, 0, 0]


# --- scores: hand-computed ----------------------------------------------------------------


def test_perfect_binary_prediction():
    # pred = gt: every threshold has R = P = 1, so ODS = OIS = 1. The curve is a single point
    # and BSDS's Area_PR needs at least two distinct recalls (numel(Ru) > 1), else it is 0.
    gts = [segment(4 + 5 * i, y0=3 + i, n=4) for i in range(5)]
    out = edge_ods_ois([g.astype(np.float32) for g in gts], [[g] for g in gts])
    assert out == {"ODS": 1.0, "OIS": 1.0, "AP": 0.0}


def test_perfect_ranking_ap():
    # 25 images, each one 4-px boundary predicted exactly with confidence s_j = (j + 0.7) / 25
    # and nothing else. At t_k = k/100 the images with s_j >= t_k are found: P = 1 and
    # R = #found / 25, which takes every value 1/25 .. 1 (s_j are 0.04 apart) and R = P = 0 at
    # t = 0.99 > max s_j. Area_PR interpolates P linearly from (R 0, P 0) to (0.04, 1): at
    # recall 0, .01, .02, .03 it is 0, .25, .5, .75, and 1 at the 97 points 0.04 .. 1, so
    # AP = (0 + .25 + .5 + .75 + 97) * 0.01 = 0.985. Every image is perfect at its thresholds
    # and t = 0.01 finds all: ODS = OIS = 1.
    gts = [segment(16, y0=8, n=4) for _ in range(25)]
    preds = [g * (j + 0.7) / 25 for j, g in enumerate(gts)]
    out = edge_benchmark(preds, [[g] for g in gts])
    assert out["ODS"] == 1.0 and out["OIS"] == 1.0
    assert out["AP"] == pytest.approx(0.985, abs=1e-12)
    assert out["recall"][0] == 1.0 and out["recall"][-1] == 0.0
    np.testing.assert_allclose(out["image_threshold"], np.floor(100 * (np.arange(25) + 0.7)
                                                                / 25) / 100)


def test_ods_interpolates_between_thresholds():
    # Two thresholds: (R 1, P .2) and (R .2, P 1), both F = 1/3. On the segment between them
    # R + P = 1.2 and F = R*P/0.6, largest at the middle (F = 0.6); findBestRPF samples
    # linspace(0, 1, 100), whose nearest points are 0.5 -+ 1/198: R, P = 0.6 +- 0.8/198 and
    # F = 0.6 - (0.8/198)**2 / 0.6.
    counts = np.array([[[5, 5, 5, 25], [1, 5, 1, 1]]], dtype=float)
    out = benchmark_from_counts(counts, np.array([0.25, 0.5]))
    assert out["ODS"] == pytest.approx(0.6 - (0.8 / 198) ** 2 / 0.6, abs=1e-14)
    assert out["ODS_threshold"] == pytest.approx(0.25 + 0.25 * 49 / 99)
    assert out["ODS_recall"] == pytest.approx(0.6 + 0.8 / 198)


def test_ois_takes_the_last_threshold_among_ties():
    # Image 1 has F = 2/3 at both thresholds: (R .5, P 1) then (R 1, P .5); image 2 is perfect
    # at both. BSDS takes the last tie: sums (8, 8, 8, 12) -> R 1, P 2/3, OIS = 0.8 (the first
    # tie would give (6, 8, 6, 6) -> 6/7).
    counts = np.array([[[2, 4, 2, 2], [4, 4, 4, 8]], [[4, 4, 4, 4], [4, 4, 4, 4]]], dtype=float)
    out = benchmark_from_counts(counts, np.array([0.25, 0.5]))
    assert out["OIS"] == pytest.approx(0.8)
    assert out["OIS_recall"] == 1.0 and out["OIS_precision"] == pytest.approx(2 / 3)


def test_ods_one_threshold_ois_one_per_image():
    # Image A: true segment at 0.8, false one at 0.4; image B: true segment at 0.3 only.
    # t <= 0.3: P = 10/15, R = 1 -> F = 0.8; 0.3 < t <= 0.4: P = R = 1/2; 0.4 < t <= 0.8:
    # P = 1, R = 1/2 -> F = 2/3. Between neighbouring thresholds F stays below 0.8, so
    # ODS = 0.8, while each image alone reaches F = 1.
    gt_a, gt_b = segment(8), segment(20)
    pred_a = 0.8 * gt_a + 0.4 * segment(26)
    pred_b = 0.3 * gt_b
    out = edge_ods_ois([pred_a, pred_b], [[gt_a], [gt_b]])
    assert out["ODS"] == pytest.approx(0.8)
    assert out["OIS"] == pytest.approx(1.0)


def test_area_pr_first_occurrence_and_matlab_grid():
    # R = [1, .5, .5, 0], P = [.5, .8, 1, 0] (thresholds ascending). unique keeps the first
    # R = .5 (P .8): P = 1.6 R on [0, .5] and .8 - .6 (R - .5) on [.5, 1]. Sum over the grid:
    # 1.6 * (0 + .01 + ... + .5) = 20.4, plus 50 * .8 - .6 * (.01 + ... + .5) = 32.35.
    assert area_pr(np.array([1, 0.5, 0.5, 0]), np.array([0.5, 0.8, 1, 0])) == pytest.approx(
        0.5275)
    # Recall range [.2, .7]: grid points outside count 0. MATLAB's 0:0.01:1 is built from both
    # ends and its 0.7 is the double 0.7 (= 1 - 0.3), inside the range; 70 * 0.01 would be
    # 0.7000000000000001 and drop the last point. P = .9 - .8 (R - .2) at R = .2 .. .7:
    # 51 * .9 - .8 * (0 + .01 + ... + .5) = 35.7.
    assert area_pr(np.array([0.7, 0.2]), np.array([0.5, 0.9])) == pytest.approx(0.357)
    assert area_pr(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0


def test_empty_prediction_and_no_images():
    assert edge_ods_ois([np.zeros((S, S))], [[segment(5)]]) == {"ODS": 0.0, "OIS": 0.0,
                                                                 "AP": 0.0}
    assert edge_ods_ois([], []) == {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}
    assert scores_from_counts(np.zeros((0, 99, 4))) == {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}


def test_results_are_reproducible():
    # The correspondence's random outlier graph is reseeded before every call.
    rng = np.random.default_rng(3)
    pred = rng.random((48, 48)) ** 4
    gts = [rng.random((48, 48)) > 0.9 for _ in range(2)]
    a = image_counts(pred, gts, bsds_thresholds(9), 0.02)
    b = image_counts(pred, gts, bsds_thresholds(9), 0.02)
    np.testing.assert_array_equal(a, b)


def test_approx_counts_never_below_exact():
    rng = np.random.default_rng(1)
    pred = rng.random((40, 40)) ** 3
    gts = [rng.random((40, 40)) > 0.85 for _ in range(3)]
    ts = bsds_thresholds(9)
    exact = image_counts(pred, gts, ts, 0.03)
    approx = image_counts(pred, gts, ts, 0.03, mode="approx")
    np.testing.assert_array_equal(exact[:, [1, 3]], approx[:, [1, 3]])  # same sums
    assert (approx[:, [0, 2]] >= exact[:, [0, 2]]).all()
    assert (approx[:, [0, 2]] > exact[:, [0, 2]]).any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        edge_ods_ois([np.zeros((S, S))], [[segment(5)]], mode="fast")
    with pytest.raises(ValueError, match="max_dist"):
        edge_ods_ois([np.zeros((S, S))], [[segment(5)]], max_dist=0)
    with pytest.raises(ValueError, match="shape"):
        edge_ods_ois([np.zeros((S, S + 1))], [[segment(5)]])


# --- the Metric interface -----------------------------------------------------------------


def test_edge_metric_ignore_and_present():
    target = torch.from_numpy(segment(10).astype(np.int64))
    target[:, 20:] = 255
    pred = torch.from_numpy(segment(10).astype(np.float32) * 0.95)
    pred[:, 25] = 1.0  # a false edge, but in the ignored region
    wrong = torch.from_numpy(segment(3).astype(np.float32))
    m = EdgeMetric(thresholds=9, nms=False)  # scored as given
    m.update([pred, wrong], torch.stack([target, target]), torch.tensor([True, False]))
    assert m.num_samples == 1
    # A binary-like prediction: single recall value, so AP 0 (see test_perfect_binary_...).
    assert m.compute() == {"ODS": 1.0, "OIS": 1.0, "AP": 0.0}
    m.reset()
    assert m.compute() == {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}


def test_edge_metric_several_annotators_per_image():
    a1, a2 = segment(10), segment(15)
    pred = torch.from_numpy(a1.astype(np.float32))
    expected = edge_ods_ois([a1.astype(np.float32)], [[a1, a2]], thresholds=9, max_dist=0.03)
    assert expected["ODS"] == pytest.approx(2 * 0.5 / 1.5)  # P 1, R 1/2
    for target in ([a1, a2], np.stack([a1, a2]), torch.from_numpy(np.stack([a1, a2]))):
        m = EdgeMetric(thresholds=9, max_dist=0.03)
        m.update([pred], [target])
        assert m.compute() == expected
    full = m.benchmark()
    assert full["recall"].shape == (9,) and full["ODS"] == expected["ODS"]


def test_build_metric_edge_mode():
    m = build_metric("edge", edge_thresholds=5, edge_max_dist=0.011, edge_mode="approx")
    assert isinstance(m, EdgeMetric) and m.mode == "approx" and m.max_dist == 0.011
    assert len(m.thresholds) == 5 and build_metric("edge").mode == "exact"
    with pytest.raises(ConfigError, match="edge_mode"):
        build_metric("edge", edge_mode="fast")


def test_edge_metric_soft_ridges():
    # Soft 3-px ridges on 128x128 images at 99 thresholds, in both modes (NMS on).
    rng = np.random.default_rng(0)
    preds = []
    for _ in range(4):
        pred = 0.05 * rng.random((128, 128))
        for x in rng.integers(5, 123, 4):
            pred[:, x - 1 : x + 2] = np.maximum(pred[:, x - 1 : x + 2], [0.5, 0.9, 0.5])
        preds.append(torch.from_numpy(pred.astype(np.float32)))
    target = torch.stack([(p > 0.8).long() for p in preds])
    for mode in ("approx", "exact"):
        m = build_metric("edge", edge_mode=mode)
        m.update(preds, target)
        out = m.compute()
        assert out["ODS"] > 0.95


# --- edge NMS (pyEdgeEval's compiled edgesNms) --------------------------------------------


def test_nms_keeps_a_one_pixel_ridge():
    # A 1-px line with a soft value: NMS keeps every pixel of it, and beside it nothing but a
    # faint pixel beyond each end (the smoothing's spill). As in edgesNms the map is first
    # smoothed (convTri, r=1), which lowers a lone 1-px line's strength.
    pred = np.zeros((64, 64))
    cv2.line(pred, (8, 20), (56, 40), 0.7, 1)
    ridge = pred > 0
    out = edge_nms(pred)
    assert (out[ridge] > 0.25).all()
    assert (out[~ridge] < 0.1).all() and np.count_nonzero(out[~ridge]) <= 2


def test_nms_thins_a_blurred_edge_to_its_ridge():
    # A vertical edge blurred to ~7 px wide, ridge at column 20 (and a diagonal one): after
    # NMS each row keeps exactly one pixel, at the ridge; thresholding no longer gives bands.
    x = np.arange(48)
    profile = np.exp(-((x - 20) ** 2) / (2 * 1.5**2))
    pred = np.tile(profile, (48, 1))
    out = edge_nms(pred)
    rows = out[6:-6, 6:-6] > 1e-3
    assert (rows.sum(axis=1) == 1).all() and (np.argmax(rows, axis=1) + 6 == 20).all()
    thick = (pred >= 0.3)[6:-6, 6:-6].sum(axis=1)
    assert (thick >= 3).all()

    yy, xx = np.mgrid[:64, :64]
    diag = np.exp(-(((xx - yy) / np.sqrt(2)) ** 2) / (2 * 1.5**2))
    kept = edge_nms(diag)[8:-8, 8:-8] > 1e-3
    assert (kept.sum(axis=1) == 1).all() and (np.argmax(kept, axis=1) == np.arange(48)).all()


def test_nms_leaves_binary_maps_and_is_on_by_default():
    ring = np.zeros((32, 32))
    cv2.circle(ring, (16, 16), 9, 1.0, 2)
    np.testing.assert_array_equal(edge_nms(ring), ring)
    assert EdgeMetric().nms and not EdgeMetric(nms=False).nms
    assert build_metric("edge").nms and not build_metric("edge", edge_nms=False).nms
