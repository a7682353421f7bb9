"""The exact edge benchmark (its CSA matcher) against pyEdgeEval's own evaluator and thinning,
and on BSDS500. The optimal matcher is checked against these references in test_edge_match.py.

pyEdgeEval's ``evaluate_boundaries_threshold_multiple_gts`` is the reference for the per-image
counts (it loops over thresholds and annotators calling the BSDS correspondence) and its
``calculate_metrics`` for the aggregation. The correspondence draws a random outlier graph
from a clock-seeded generator; for identical counts the reference's calls are reseeded with the
same value as ours, through the library's exported ``Random::reseed`` (set up here, separately
from the code under test).
"""

import ctypes
import sys

import cv2
import numpy as np
import pytest
import scipy.io
from pyEdgeEval._lib import correspond_pixels
from pyEdgeEval.common.binary_label import calculate_metrics
from pyEdgeEval.common.binary_label import evaluate_boundaries as pee_eval
from pyEdgeEval.preprocess import binary_thin, bwmorph_thin

from mtvision.metrics.edge import (
    CORRESPONDENCE_SEED,
    benchmark_from_counts,
    bsds_thresholds,
    edge_benchmark,
    image_counts,
    thin_stack,
)


def _reseeder():
    lib = ctypes.CDLL(sys.modules[correspond_pixels.__module__].__file__)
    state = ctypes.addressof(ctypes.c_char.in_dll(lib, "_ZN6Random4randE"))
    fn = lib._ZN6Random6reseedEm
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_uint64], None
    return lambda: fn(state, CORRESPONDENCE_SEED)


@pytest.fixture
def seeded_reference(monkeypatch):
    """pyEdgeEval's evaluator with its correspondence reseeded before every call."""
    reseed = _reseeder()

    def seeded(*args, **kwargs):
        reseed()
        return correspond_pixels(*args, **kwargs)

    monkeypatch.setattr(pee_eval, "correspond_pixels", seeded)
    return pee_eval.evaluate_boundaries_threshold_multiple_gts


@pytest.fixture
def bwmorph(monkeypatch):
    # The port calls np.in1d, removed in numpy 2; np.isin is its replacement.
    monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    return bwmorph_thin


def soft_edges(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """A soft edge map: blurred random polylines plus faint noise, in [0, 1]."""
    img = np.zeros(shape, dtype=np.float32)
    for _ in range(n):
        pts = rng.integers(0, [shape[1], shape[0]], (4, 2)).astype(np.int32)
        cv2.polylines(img, [pts], False, float(rng.uniform(0.5, 1.0)), 1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = img / max(float(img.max()), 1e-6) + 0.1 * rng.random(shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float64)


def jittered(rng: np.random.Generator, base: np.ndarray, p: float) -> np.ndarray:
    """An annotator's boundary: ``base`` with a fraction ``p`` of pixels moved by one."""
    ys, xs = np.nonzero(base)
    move = rng.random(ys.size) < p
    ys = np.clip(ys + move * rng.integers(-1, 2, ys.size), 0, base.shape[0] - 1)
    xs = np.clip(xs + move * rng.integers(-1, 2, xs.size), 0, base.shape[1] - 1)
    out = np.zeros_like(base)
    out[ys, xs] = True
    return out


def fmeasure(r, p):
    """BSDS's F (0 where precision and recall are both 0)."""
    return 2 * p * r / (p + r + ((p + r) == 0))


def bsds_ods(ts: np.ndarray, rec: np.ndarray, prec: np.ndarray) -> float:
    """findBestRPF of collect_eval_bdry.m, step by step."""
    best = -1.0
    a = np.linspace(0, 1, 100)
    for i in range(1, len(ts)):
        f = fmeasure(a * rec[i] + (1 - a) * rec[i - 1], a * prec[i] + (1 - a) * prec[i - 1])
        best = max(best, float(f.max()))
    return best


# --- thinning -----------------------------------------------------------------------------


def real_like_masks(rng: np.random.Generator) -> np.ndarray:
    """Thresholded soft edge maps at several levels: thick, branching, touching strokes."""
    return np.stack([soft_edges(rng, (48, 64), 6) >= t for t in (0.15, 0.3, 0.5, 0.7)
                     for _ in range(3)])


def test_thin_stack_equals_bwmorph_port(bwmorph):
    rng = np.random.default_rng(0)
    random = rng.random((20, 48, 64)) > rng.uniform(0.1, 0.9, (20, 1, 1))
    masks = np.concatenate([random, real_like_masks(rng)])
    np.testing.assert_array_equal(thin_stack(masks), np.stack([bwmorph(m) for m in masks]))


def test_binary_thin_stops_one_sub_iteration_early(bwmorph):
    # pyEdgeEval's binary_thin returns as soon as the first sub-iteration deletes nothing,
    # without trying the second; bwmorph (and thin_stack) repeat both until a whole iteration
    # deletes nothing. On this L the first sub-iteration keeps everything and the second
    # deletes the corner.
    ell = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    assert (binary_thin(ell) == ell).all()
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    assert (bwmorph(ell) == expected).all() and (thin_stack(ell[None])[0] == expected).all()
    # Otherwise the two agree: binary_thin's result is a state of the full iteration, so
    # thinning it on to the end gives ours.
    rng = np.random.default_rng(1)
    masks = np.concatenate([rng.random((20, 48, 64)) > 0.4, real_like_masks(rng)])
    ref = np.stack([binary_thin(m) for m in masks])
    np.testing.assert_array_equal(thin_stack(ref), thin_stack(masks))


# --- counts and scores against pyEdgeEval ---------------------------------------------------


def synthetic_set(seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """3 soft maps of different strength (different best thresholds per image) and 2-3
    annotators each: the map's strong edges moved by a pixel here and there, a band of them
    left out, and a stroke the prediction does not have."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for i, scale in enumerate((1.0, 0.6, 0.35)):
        pred = soft_edges(rng, (40, 56), 4) * scale
        base = thin_stack((pred >= 0.45 * scale)[None])[0]
        annotators = []
        for p in (0.0, 0.3, 0.6)[: 2 + i % 2]:
            extra = np.zeros((40, 56), dtype=np.uint8)
            pts = rng.integers(0, [56, 40], (3, 2)).astype(np.int32)
            cv2.polylines(extra, [pts], False, 1, 1)
            ann = jittered(rng, base, p) | extra.astype(bool)
            y = int(rng.integers(0, 30))
            ann[y : y + 10] = False
            annotators.append(ann)
        gts.append(annotators)
        preds.append(pred)
    return preds, gts


def test_counts_and_scores_match_pyedgeeval(seeded_reference, bwmorph, monkeypatch):
    preds, gts = synthetic_set(0)
    ts = bsds_thresholds(19)
    max_dist = 0.02
    ours = np.stack([image_counts(p, g, ts, max_dist, matcher="csa")
                     for p, g in zip(preds, gts, strict=True)])

    def reference(i: int) -> np.ndarray:  # [T, 4] = (cntR, sumR, cntP, sumP)
        return np.stack(seeded_reference(ts, preds[i], gts[i], max_dist=max_dist,
                                         apply_thinning=True), axis=1)

    # With its default thinning (binary_thin) the counts agree wherever the thinned maps do;
    # on these soft maps they differ by a pixel at a few thresholds.
    same_thin = np.array([[(binary_thin(p >= t) == thin_stack((p >= t)[None])[0]).all()
                           for t in ts] for p in preds])
    assert 0 < same_thin.sum() < same_thin.size
    default = np.stack([reference(i) for i in range(len(preds))])
    np.testing.assert_array_equal(ours[same_thin], default[same_thin])

    # With the bwmorph port as its thinning (BSDS thins with bwmorph) everything agrees.
    monkeypatch.setattr(pee_eval, "binary_thin", bwmorph)
    np.testing.assert_array_equal(ours, np.stack([reference(i) for i in range(len(preds))]))
    assert (ours[:, :, 0] < ours[:, :, 1]).any()  # a non-trivial case: not all matched

    def eval_single(sample):
        return tuple(reference(sample["name"]).T)

    samples = [{"name": i} for i in range(len(preds))]
    # (check_thresholds takes a list, not an array)
    _, thresholds, overall = calculate_metrics(eval_single, ts.tolist(), samples, nproc=1)
    out = edge_benchmark(preds, gts, max_dist=max_dist, thresholds=19, matcher="csa")
    rec = np.array([r["recall"] for r in thresholds])
    prec = np.array([r["precision"] for r in thresholds])
    np.testing.assert_allclose(out["recall"], rec, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["precision"], prec, rtol=0, atol=1e-15)
    # pyEdgeEval interpolates at 101 points between thresholds, BSDS at 100.
    assert out["ODS"] == pytest.approx(bsds_ods(ts, rec, prec), abs=1e-15)
    assert out["ODS"] == pytest.approx(overall["ODS_f1"], abs=1e-3)

    # OIS: BSDS takes each image's last best threshold, pyEdgeEval the first.
    f_img = [fmeasure(c[:, 0] / c[:, 1], c[:, 2] / np.maximum(c[:, 3], 1)) for c in ours]
    last = [len(f) - 1 - int(np.argmax(f[::-1] == f.max())) for f in f_img]
    s = sum(c[k] for c, k in zip(ours, last, strict=True))
    r, p = s[0] / s[1], s[2] / s[3]
    assert out["OIS"] == pytest.approx(fmeasure(r, p), abs=1e-12)
    if all(int(np.argmax(f)) == k for f, k in zip(f_img, last, strict=True)):
        assert out["OIS"] == pytest.approx(overall["OIS_f1"], abs=1e-12)

    # pyEdgeEval's AUC is BSDS's Area_PR without the recall-1 grid point, which adds nothing
    # when recall stays below 1.
    assert rec.max() < 1
    assert out["AP"] == pytest.approx(overall["AUC"], abs=1e-12)


# --- BSDS500 sample (research-only data, read from the shared folder) ----------------------


def load_bsds(shared_data, index: int = 0) -> list[np.ndarray]:
    files = sorted((shared_data / "bsds500/BSDS500/data/groundTruth/test").glob("*.mat"))
    if not files:
        pytest.skip("no BSDS500 ground truth in the shared data")
    cells = scipy.io.loadmat(files[index])["groundTruth"]
    return [cells[0, k]["Boundaries"][0, 0].astype(bool) for k in range(cells.shape[1])]


def test_bsds_annotator_against_the_others(shared_data, seeded_reference):
    annotators = load_bsds(shared_data)
    assert annotators[0].shape in ((321, 481), (481, 321)) and len(annotators) >= 4
    pred, others = annotators[0].astype(np.float64), annotators[1:]
    assert (binary_thin(annotators[0]) == thin_stack(annotators[0][None])[0]).all()

    # A binary map: every threshold gives the same thinned map, hence the same counts.
    counts = image_counts(pred, others, bsds_thresholds(99), matcher="csa")
    assert (counts == counts[0]).all()
    out = benchmark_from_counts(counts[None])
    ref = np.stack(seeded_reference(np.array([0.5]), pred, others), axis=1)
    np.testing.assert_array_equal(counts[:1], ref)

    r, p = ref[0, 0] / ref[0, 1], ref[0, 2] / ref[0, 3]
    assert out["ODS"] == pytest.approx(fmeasure(r, p), abs=1e-12)
    assert out["OIS"] == pytest.approx(out["ODS"], abs=1e-12)
    assert out["AP"] == 0.0  # one recall value: BSDS's Area_PR is 0
    assert 0.5 < out["ODS"] < 0.95  # one human against the others

    approx = image_counts(pred, others, np.array([0.5]), mode="approx")
    assert (approx[:, [0, 2]] >= counts[:1, [0, 2]]).all()


def test_bsds_soft_prediction_crop(shared_data, seeded_reference):
    # A soft map made from all annotators, on a crop, at a few thresholds: counts identical.
    annotators = [a[100:196, 150:278] for a in load_bsds(shared_data, 1)]
    soft = cv2.GaussianBlur(np.mean(annotators, axis=0), (0, 0), 1.2)
    soft = soft / soft.max()
    ts = bsds_thresholds(7)
    for t in ts:
        assert (binary_thin(soft >= t) == thin_stack((soft >= t)[None])[0]).all()
    ref = np.stack(seeded_reference(ts, soft, annotators), axis=1)
    np.testing.assert_array_equal(image_counts(soft, annotators, ts, matcher="csa"), ref)
