"""The optimal correspondence solver against independent references.

* a dense assignment by ``scipy.optimize.linear_sum_assignment`` of the same objective (match
  cost ``rint(100 d) - outlier``, 0 for "unmatched"), written here from match.cc's definition;
* pyEdgeEval's compiled CSA (``correspond_pixels``): ours is never worse on its own cost and
  the scores agree closely on a BSDS500 crop.
"""

import math

import cv2
import numpy as np
import pytest
from pyEdgeEval._lib import correspond_pixels
from scipy.optimize import linear_sum_assignment

from mtvision.data.formats.bsds import load_boundaries
from mtvision.metrics import edge_match
from mtvision.metrics.edge import benchmark_from_counts, bsds_thresholds, image_counts
from mtvision.metrics.edge_match import AnnotatorMatcher


def random_maps(rng: np.random.Generator, shape=(40, 56)) -> tuple[np.ndarray, np.ndarray]:
    """A thin predicted map and a boundary map sharing strokes (moved a pixel here and there)
    plus clutter: many overlapping candidate pairs, so the assignment is not trivial."""
    gt = np.zeros(shape, dtype=np.uint8)
    for _ in range(4):
        pts = rng.integers(0, [shape[1], shape[0]], (3, 2)).astype(np.int32)
        cv2.polylines(gt, [pts], False, 1, 1)
    ys, xs = np.nonzero(gt)
    move = rng.random(ys.size) < 0.4
    py = np.clip(ys + move * rng.integers(-2, 3, ys.size), 0, shape[0] - 1)
    px = np.clip(xs + move * rng.integers(-2, 3, xs.size), 0, shape[1] - 1)
    keep = rng.random(ys.size) < 0.8
    pred = np.zeros(shape, dtype=bool)
    pred[py[keep], px[keep]] = True
    pred |= rng.random(shape) < 0.03
    return pred, gt.astype(bool)


def dense_optimum(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> tuple[int, int]:
    """(matched pairs, cost) of the correspondence objective by a dense assignment."""
    h, w = pred.shape
    radius = max_dist * math.hypot(h, w)
    outlier = math.ceil(100.0 * radius * 100)
    p, g = np.argwhere(pred), np.argwhere(gt)
    d2 = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    within = d2 <= radius * radius
    cost = np.where(within, np.rint(np.sqrt(d2) * 100) - outlier, 0)
    r, c = linear_sum_assignment(cost)
    real = within[r, c]
    return int(real.sum()), int(cost[r, c].sum())


def csa_cost(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> tuple[int, int]:
    """(matched pairs, cost in the same units) of pyEdgeEval's CSA answer."""
    h, w = pred.shape
    radius = max_dist * math.hypot(h, w)
    outlier = math.ceil(100.0 * radius * 100)
    m1, _, _, _ = correspond_pixels(pred.astype(float), gt.astype(float), max_dist=max_dist)
    ys, xs = np.nonzero(m1)
    idx = m1[ys, xs].astype(int) - 1  # column-major index of the matched boundary pixel
    gy, gx = idx % h, idx // h
    d = np.hypot(ys - gy, xs - gx)
    return len(ys), int((np.rint(d * 100) - outlier).sum())


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_dense_optimum(seed):
    rng = np.random.default_rng(seed)
    pred, gt = random_maps(rng)
    max_dist = (0.02, 0.03, 0.045)[seed % 3]
    pairs, _ = dense_optimum(pred, gt, max_dist)
    yx = np.argwhere(pred)
    found, matched = AnnotatorMatcher(yx, gt, max_dist).match(np.ones(len(yx), dtype=bool))
    assert found == pairs and matched.sum() == pairs
    # Every matched predicted pixel has a boundary pixel within the distance.
    radius = max_dist * math.hypot(*pred.shape)
    near = cv2.dilate(gt.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(radius) + 1,) * 2)).astype(bool)
    assert near[tuple(yx[matched].T)].all()


@pytest.mark.parametrize("seed", range(6))
def test_never_worse_than_csa(seed):
    rng = np.random.default_rng(100 + seed)
    pred, gt = random_maps(rng, (48, 64))
    pairs, cost = dense_optimum(pred, gt, 0.03)
    csa_pairs, c = csa_cost(pred, gt, 0.03)
    assert cost <= c
    assert abs(pairs - csa_pairs) <= max(3, 0.02 * pairs)


def test_reuse_across_thresholds_is_exact():
    # One matcher over nested subsets (its component cache at work) against a fresh one each.
    rng = np.random.default_rng(7)
    pred, gt = random_maps(rng, (48, 64))
    yx = np.argwhere(pred)
    strength = rng.random(len(yx))
    shared = AnnotatorMatcher(yx, gt, 0.03)
    for t in (0.0, 0.1, 0.2, 0.2, 0.5, 0.3, 0.9):
        present = strength >= t
        got = shared.match(present)
        fresh = AnnotatorMatcher(yx[present], gt, 0.03).match(np.ones(present.sum(), bool))
        assert got[0] == fresh[0]
        assert got[0] == dense_optimum(pred & _mask(yx[present], pred.shape), gt, 0.03)[0]


@pytest.mark.parametrize("part_size", [1, 16, 1024])
def test_all_thresholds_in_one_batch_are_exact(monkeypatch, part_size):
    # match_all over several subsets at once (components shared between them solved once,
    # small components packed into solver calls of part_size nodes) against the dense optimum
    # of each subset alone.
    monkeypatch.setattr(edge_match, "PART_SIZE", part_size)
    rng = np.random.default_rng(11)
    pred, gt = random_maps(rng, (48, 64))
    yx = np.argwhere(pred)
    strength = rng.random(len(yx))
    ts = np.array([0.0, 0.1, 0.1, 0.4, 0.25, 0.8, 1.1])  # repeated, unordered, empty
    present = strength[None] >= ts[:, None]
    found, matched = AnnotatorMatcher(yx, gt, 0.03).match_all(present)
    for k in range(len(ts)):
        pairs, cost = dense_optimum(_mask(yx[present[k]], pred.shape), gt, 0.03)
        assert found[k] == pairs
        assert matched[k].sum() == pairs and not (matched[k] & ~present[k]).any()
        # The matched pixels can all be matched at the optimal cost: re-solving with only
        # them must match every one of them.
        assert dense_optimum(_mask(yx[matched[k]], pred.shape), gt, 0.03)[0] == pairs


def _mask(yx: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(yx.T)] = True
    return m


def test_agrees_with_csa_on_a_bsds_crop(shared_data):
    """A soft map from an image's gradients on a 160x120 crop of a BSDS500 test image, all
    annotators, 19 thresholds: the optimal matcher's ODS/OIS/AP within 0.002 of CSA's."""
    mats = sorted((shared_data / "bsds500/BSDS500/data/groundTruth/test").glob("*.mat"))
    if not mats:
        pytest.skip("no BSDS500 ground truth in the shared data")
    annotators = [a[60:180, 100:260] for a in load_boundaries(mats[2])]
    jpg = mats[2].parents[2] / "images" / "test" / f"{mats[2].stem}.jpg"
    image = cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE)[60:180, 100:260]
    assert image.shape == annotators[0].shape
    grey = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 2.0)
    soft = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    soft = np.clip(soft / np.percentile(soft, 99.5), 0, 1).astype(np.float64)
    ts = bsds_thresholds(19)
    ours = image_counts(soft, annotators, ts, nms=True)
    ref = image_counts(soft, annotators, ts, nms=True, matcher="csa")
    np.testing.assert_array_equal(ours[:, [1, 3]], ref[:, [1, 3]])  # same thinned maps
    assert (ours[:, 0] > 0).sum() > 10
    assert (np.abs(ours[:, 0] - ref[:, 0]) <= 0.01 * ref[:, 1]).all()
    a, b = benchmark_from_counts(ours[None], ts), benchmark_from_counts(ref[None], ts)
    for key in ("ODS", "OIS", "AP"):
        assert a[key] == pytest.approx(b[key], abs=0.002)
