"""Edge detection: the BSDS500 boundary benchmark (ODS / OIS F-measure and AP).

Protocol of Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation", TPAMI
2011, as coded in the benchmark's ``evaluation_bdry_image.m`` and ``collect_eval_bdry.m``:

* thresholds ``t_k = k / (thresholds + 1)``, k = 1..thresholds; at each one the prediction is
  binarised (``pred >= t``) and thinned to 1-px width (``bwmorph(..., 'thin', inf)``: the
  Guo-Hall algorithm, re-implemented here as :func:`thin_stack` to thin all thresholds at once);
* matching tolerance ``d = max_dist * image diagonal`` (0.0075 for BSDS, 0.011 for NYUD);
* per threshold and annotator the thinned prediction is matched one-to-one to the annotator's
  boundary pixels by the benchmark's own pixel correspondence (``correspondPixels``, a
  min-cost bipartite assignment solved with CSA; the compiled copy in pyEdgeEval is used);
  recall counts (cntR matched / sumR boundary pixels) are summed over annotators, and a
  predicted pixel is correct (cntP of sumP) if it is matched to any annotator;
* ODS: best F of the dataset-level precision / recall, interpolating linearly between
  neighbouring thresholds (``findBestRPF``); OIS: each image at its best threshold (the last
  one among ties), counts summed over images, F of the sums; AP: ``Area_PR``, precision
  ``interp1``-ed at recall 0:0.01:1 over the unique recall values (0 outside their range),
  summed and times 0.01. A prediction with a single recall value (e.g. a binary map) has AP 0.

``mode="exact"`` (default) is that protocol. Its correspondence is solved by one of two
matchers: ``matcher="optimal"`` (default; :mod:`mtvision.metrics.edge_match`) finds the
minimum of the correspondence's own cost exactly and deterministically, about 10x faster than
the benchmark's CSA; ``matcher="csa"`` is the benchmark's own code (pyEdgeEval's compiled
copy), kept as the reference. CSA links unmatched pixels through a random sparse outlier graph,
which BSDS seeds from the clock, so its counts jitter by a few pixels from run to run and can
fall a few matches short of the optimum; here its generator is reseeded with a fixed value
before every call, so equal inputs always give equal scores.

Edge NMS (``nms=True``; the default of :class:`EdgeMetric`): soft maps are first thinned by the
Structured Edge toolbox's ``edgesNms`` (orientation from the smoothed map's second derivatives,
radius 1, border suppression 5, multiplier 1.01; pyEdgeEval's compiled copy), as HED, RCF,
BDCN and PiDiNet do before their benchmark runs; binary maps (only 0 and 1) are left as they
are. ``mode="approx"`` is a faster approximation: a
pixel counts as matched when any pixel of the other map lies within ``d``, so several
predicted pixels may be credited for one boundary pixel and vice versa; its counts are never
below the exact ones and its scores are somewhat higher than the benchmark's.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from pyEdgeEval._lib import correspond_pixels
from pyEdgeEval.preprocess.nms import fast_nms
from tqdm import tqdm

from mtvision.metrics.base import Metric, to_numpy
from mtvision.metrics.edge_match import AnnotatorMatcher

MODES = ("exact", "approx")
# Solvers of the exact mode's correspondence: ours (exact optimum) and the benchmark's CSA.
MATCHERS = ("optimal", "csa")

# Seed of the correspondence's outlier graph (any fixed non-zero value; 0 means "the clock").
CORRESPONDENCE_SEED = 0x5DEECE66D

# Neighbour offsets (row, col) of the 8 bits of a pixel's neighbourhood code, in the bit order
# of skimage.morphology.thin (its correlation mask [[8, 4, 2], [16, 0, 1], [32, 64, 128]]).
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _guo_hall_luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two Guo-Hall sub-iterations, indexed by neighbourhood code.

    Same conditions G1, G2, G3 / G3' as skimage's ``_generate_thin_luts``.
    """
    code = np.arange(256)
    b = [(code >> i) & 1 == 1 for i in range(8)]
    g1 = sum((~b[i] & (b[i + 1] | b[(i + 2) % 8])).astype(int) for i in (0, 2, 4, 6)) == 1
    n1 = sum((b[k] | b[k - 1]).astype(int) for k in (1, 3, 5, 7))
    n2 = sum((b[k] | b[(k + 1) % 8]).astype(int) for k in (1, 3, 5, 7))
    g2 = np.isin(np.minimum(n1, n2), (2, 3))
    g3 = ~((b[1] | b[2] | ~b[7]) & b[0])
    g3p = ~((b[5] | b[6] | ~b[3]) & b[4])
    return g1 & g2 & g3, g1 & g2 & g3p


_LUTS = _guo_hall_luts()
# Correlating a 0/1 image with this kernel gives each pixel its neighbourhood code.
_CODE_KERNEL = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]], dtype=np.float32)


def _dedupe(idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The distinct values of ``idx`` (in no particular order) in linear time.

    Each value writes its position into ``slot``; the last write wins, so exactly one position
    per value reads itself back. (np.unique sorts or hashes and dominated the thinning time.)
    """
    pos = np.arange(idx.size, dtype=slot.dtype)
    slot[idx] = pos
    return idx[slot[idx] == pos]


def thin_stack(masks: np.ndarray) -> np.ndarray:
    """Thin every 2-D binary mask of a ``[N, H, W]`` stack to 1-px lines.

    Equals ``skimage.morphology.thin`` and MATLAB's ``bwmorph(m, 'thin', inf)``: both
    sub-iterations are repeated until a whole iteration deletes nothing.

    Guo-Hall is a parallel algorithm: each sub-iteration deletes, from one snapshot, the pixels
    whose 3x3 neighbourhood code is in its table. A pixel's decision can only change when a
    neighbour was deleted, so after the first two sub-iterations only the neighbours of the
    pixels deleted in the previous two are re-examined (the table alternates with period 2),
    and the codes are updated as pixels go rather than recomputed. The work then follows the
    pixels removed instead of (iterations x image area), and all masks of the stack go through
    the same vectorised steps.
    """
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    # A zero border around every mask: neighbours never wrap to another row or mask.
    pad = np.zeros((n, h + 2, w + 2), dtype=np.uint8)
    pad[:, 1:-1, 1:-1] = masks
    flat = pad.reshape(-1)
    offsets = np.array([di * (w + 2) + dj for di, dj in _NEIGHBOURS], dtype=np.intp)
    # Deleting p clears, in its neighbour p + offsets[k], the bit pointing back: (k + 4) % 8.
    clear = [np.uint8(255 ^ (1 << ((k + 4) % 8))) for k in range(8)]
    codes = cv2.filter2D(pad.reshape(-1, w + 2), -1, _CODE_KERNEL,
                         borderType=cv2.BORDER_CONSTANT).reshape(-1)

    # Interior pixels (code 255) are deleted by neither table: only outlines start as
    # candidates.
    cand = np.flatnonzero((flat == 1) & (codes != 255))
    prev_touched = cand
    slot = np.empty(flat.size, dtype=np.int32)  # scratch for _dedupe
    step = 0
    while cand.size:
        deleted = cand[_LUTS[step % 2][codes[cand]]]
        flat[deleted] = 0
        neighbours = offsets[:, None] + deleted  # [8, m]: one contiguous row per direction
        for k in range(8):  # per direction the indices are distinct, so in-place is safe
            codes[neighbours[k]] &= clear[k]
        touched = neighbours.reshape(-1)
        touched = _dedupe(touched[flat[touched] == 1], slot)
        # Re-examine the neighbours of this and the previous sub-iteration's deletions.
        cand = _dedupe(np.concatenate([touched, prev_touched[flat[prev_touched] == 1]]), slot)
        prev_touched = touched
        step += 1
    return pad[:, 1:-1, 1:-1].astype(bool)


def _correspondence_reseeder() -> Callable[[int], None] | None:
    """A function reseeding the random generator of pyEdgeEval's compiled correspondence.

    ``Random::rand`` is a global of that C++ library with an exported ``reseed`` method; it is
    reached through ctypes (the same loaded library). ``None`` where the symbols are missing:
    the correspondence then keeps its clock seed, as in BSDS.
    """
    try:
        lib = ctypes.CDLL(sys.modules[correspond_pixels.__module__].__file__)
        state = ctypes.addressof(ctypes.c_char.in_dll(lib, "_ZN6Random4randE"))
        reseed = lib._ZN6Random6reseedEm  # Random::reseed(u_int64_t), `this` first
    except (AttributeError, KeyError, OSError, TypeError, ValueError):
        return None
    reseed.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    reseed.restype = None
    return lambda seed: reseed(state, seed)


_reseed = _correspondence_reseeder()


def match_radius(max_dist: float, height: int, width: int) -> float:
    """The tolerance in pixels, computed as the correspondence code does (fraction x diagonal)."""
    return max_dist * math.sqrt(height * height + width * width)


def _disk(radius: float) -> np.ndarray:
    """uint8 kernel of the offsets (u, v) with ``u*u + v*v <= radius*radius``: the pixel pairs
    the correspondence may link (its test is ``d2 > maxDist*maxDist`` -> skip)."""
    r = int(math.floor(radius))
    di, dj = np.mgrid[-r : r + 1, -r : r + 1]
    return (di * di + dj * dj <= radius * radius).astype(np.uint8)


def _dilate(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Pixels with a pixel of ``mask`` within the disk ``kernel`` (nothing beyond the image)."""
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _thinned_edges(
    pred: np.ndarray, thresholds: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``bool[T, H, W]`` thinned ``pred >= t`` maps and ``int[T]`` ids of identical maps.

    Only the bounding box of the lowest threshold's mask is thinned (the masks are nested, and
    thin_stack pads the crop with the same zeros as the image border would); nested masks of
    equal size are equal, so each run of them is thinned once. Maps at consecutive thresholds
    that came out identical share an id (they need one correspondence).
    """
    h, w = pred.shape
    edges = np.zeros((len(thresholds), h, w), dtype=bool)
    group = np.zeros(len(thresholds), dtype=np.int64)
    binary = pred >= thresholds.min()
    if not binary.any():
        return edges, group
    rows, cols = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    masks = pred[None, r0:r1, c0:c1] >= thresholds[:, None, None]
    sizes = masks.sum(axis=(1, 2))
    new_run = np.r_[True, sizes[1:] != sizes[:-1]]
    edges[:, r0:r1, c0:c1] = thin_stack(masks[new_run])[np.cumsum(new_run) - 1]
    if valid is not None:
        edges &= valid  # thin first, then drop: the mask's outline must not bend the edges
    changed = [not np.array_equal(edges[k], edges[k - 1]) for k in range(1, len(thresholds))]
    group[1:] = np.cumsum(changed)
    return edges, group


def _exact_counts(
    edges: np.ndarray, group: np.ndarray, gts: list[np.ndarray], max_dist: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(cntR, cntP) per threshold by the BSDS pixel correspondence (CSA, reseeded with
    ``seed`` before every call)."""
    kernel = _disk(match_radius(max_dist, *edges.shape[1:]))
    # The correspondence only sees predicted pixels within d of the annotator's boundary (the
    # others are no graph nodes), so a threshold whose such pixels equal the previous call's
    # has the same matching: it is reused.
    near = [_dilate(g, kernel) if g.any() else None for g in gts]
    last: list[tuple[np.ndarray, int, np.ndarray] | None] = [None] * len(gts)
    cnt_r = np.zeros(len(edges), dtype=np.int64)
    cnt_p = np.zeros(len(edges), dtype=np.int64)
    for g_id in np.unique(group):
        first = int(np.flatnonzero(group == g_id)[0])
        pred = edges[first]
        matched_any = np.zeros(pred.shape, dtype=bool)
        recall = 0
        for k, gt in enumerate(gts):
            if near[k] is None:
                continue
            key = pred & near[k]
            cached = last[k]
            if cached is not None and np.array_equal(cached[0], key):
                found, matched = cached[1], cached[2]
            elif not key.any():
                found, matched = 0, key
            else:
                if _reseed is not None:
                    _reseed(seed)
                match1, match2, _, _ = correspond_pixels(pred, gt, max_dist=max_dist)
                found, matched = int((match2 > 0).sum()), match1 > 0
            last[k] = (key, found, matched)
            recall += found
            matched_any |= matched
        cnt_r[group == g_id] = recall
        cnt_p[group == g_id] = int(matched_any.sum())
    return cnt_r, cnt_p


def _optimal_counts(
    edges: np.ndarray, group: np.ndarray, gts: list[np.ndarray], max_dist: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cntR, cntP) per threshold by the exact minimum of the correspondence's cost.

    The predicted pixels of all thresholds are listed once; per annotator the arcs are found
    once and every distinct thinned map is matched in one batch (components shared between
    thresholds solved once).
    """
    present = edges.reshape(len(edges), -1)
    flat = np.flatnonzero(present.any(axis=0))
    pred_yx = np.stack(np.unravel_index(flat, edges.shape[1:]), axis=1)
    groups, firsts, slot = np.unique(group, return_index=True, return_inverse=True)
    present = present[firsts][:, flat]  # [G, N]: pixel n of the union is on in map g
    recall = np.zeros(len(groups), dtype=np.int64)
    matched_any = np.zeros(present.shape, dtype=bool)
    for g in gts:
        if g.any():
            found, matched = AnnotatorMatcher(pred_yx, g, max_dist).match_all(present)
            recall += found
            matched_any |= matched
    return recall[slot], matched_any.sum(axis=1)[slot]


def _approx_counts(
    edges: np.ndarray, gts: list[np.ndarray], max_dist: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cntR, cntP) per threshold by distance alone (see the module docstring)."""
    t, h, w = edges.shape
    radius = match_radius(max_dist, h, w)
    kernel = _disk(radius)
    gt_any = np.logical_or.reduce(gts) if gts else np.zeros((h, w), dtype=bool)
    cnt_p = (edges & _dilate(gt_any, kernel)).sum(axis=(1, 2))

    # Recall: per annotator, boundary pixels with a thinned pixel within d, found by looking
    # up the disk of offsets around each boundary pixel (gt is sparse, so this beats a
    # dilation per threshold).
    r = kernel.shape[0] // 2
    padded = np.zeros((t, h + 2 * r, w + 2 * r), dtype=bool)
    padded[:, r : r + h, r : r + w] = edges
    padded = padded.reshape(t, -1)
    di, dj = np.nonzero(kernel)
    disk = ((di - r) * (w + 2 * r) + (dj - r)).astype(np.int64)
    cnt_r = np.zeros(t, dtype=np.int64)
    chunk = max(1, 4_000_000 // (t * len(disk)))  # bounds the gathered array
    for g in gts:
        ys, xs = np.nonzero(g)
        idx = (ys + r) * (w + 2 * r) + (xs + r)
        for s in range(0, idx.size, chunk):
            near = padded[:, idx[s : s + chunk, None] + disk]  # [T, chunk, disk]
            cnt_r += near.any(axis=2).sum(axis=1)
    return cnt_r, cnt_p


def _check_options(mode: str, matcher: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown edge mode '{mode}'; available: {', '.join(MODES)}")
    if matcher not in MATCHERS:
        raise ValueError(f"unknown edge matcher '{matcher}'; available: {', '.join(MATCHERS)}")


def edge_nms(pred: np.ndarray) -> np.ndarray:
    """``edgesNms`` of a soft map (r=1, s=5, m=1.01, pyEdgeEval's compiled copy); a binary map
    (only 0 and 1: nothing to thin by strength) is returned unchanged."""
    pred = np.asarray(pred, dtype=np.float64)
    if not ((pred > 0) & (pred < 1)).any():
        return pred
    return fast_nms(pred, r=1, s=5, m=1.01)


def image_counts(
    pred: np.ndarray,
    gts: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = 0.0075,
    valid: np.ndarray | None = None,
    mode: str = "exact",
    matcher: str = "optimal",
    nms: bool = False,
    seed: int = CORRESPONDENCE_SEED,
) -> np.ndarray:
    """Per-threshold counts ``float64[T, 4]`` = (cntR, sumR, cntP, sumP) of one image.

    ``pred`` float[H, W] in [0, 1]; ``gts`` one bool[H, W] boundary map per annotator; ``valid``
    bool[H, W] (pixels outside it are dropped from prediction and ground truth); ``mode``
    "exact" (BSDS correspondence) or "approx" (distance only); ``matcher`` the exact mode's
    solver, "optimal" or "csa"; ``nms``: edge NMS first (see the module docstring); ``seed``:
    of CSA's random outlier graph (non-zero; the reference's own variation across seeds).
    """
    _check_options(mode, matcher)
    if max_dist <= 0:
        raise ValueError(f"max_dist must be > 0, got {max_dist}")
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2:
        raise ValueError(f"prediction must be 2-D, got shape {pred.shape}")
    if nms:
        pred = edge_nms(pred)
    gts = [np.asarray(g, dtype=bool) for g in gts]
    for g in gts:
        if g.shape != pred.shape:
            raise ValueError(f"ground truth shape {g.shape} != prediction shape {pred.shape}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        gts = [g & valid for g in gts]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    edges, group = _thinned_edges(pred, thresholds, valid)
    if mode == "exact" and matcher == "optimal":
        cnt_r, cnt_p = _optimal_counts(edges, group, gts, max_dist)
    elif mode == "exact":
        cnt_r, cnt_p = _exact_counts(edges, group, gts, max_dist, seed)
    else:
        cnt_r, cnt_p = _approx_counts(edges, gts, max_dist)
    counts = np.zeros((len(thresholds), 4), dtype=np.float64)
    counts[:, 0] = cnt_r
    counts[:, 1] = sum(int(g.sum()) for g in gts)
    counts[:, 2] = cnt_p
    counts[:, 3] = edges.sum(axis=(1, 2))
    return counts


def _rpf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision, F from (..., 4) counts with BSDS's guards (empty -> 0)."""
    rec = counts[..., 0] / (counts[..., 1] + (counts[..., 1] == 0))
    prec = counts[..., 2] / (counts[..., 3] + (counts[..., 3] == 0))
    return rec, prec, _fmeasure(rec, prec)


def _fmeasure(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:
    return 2 * prec * rec / (prec + rec + ((prec + rec) == 0))


def best_interpolated_f(
    thresholds: np.ndarray, rec: np.ndarray, prec: np.ndarray
) -> tuple[float, float, float, float]:
    """BSDS ``findBestRPF``: (threshold, recall, precision, F) of the best F on the curve.

    Between neighbouring thresholds recall, precision and threshold are interpolated at the
    100 points ``linspace(0, 1, 100)``; the first maximum wins.
    """
    if len(thresholds) == 1:
        return (float(thresholds[0]), float(rec[0]), float(prec[0]),
                float(_fmeasure(rec, prec)[0]))
    a = np.linspace(0.0, 1.0, 100)[None, :]
    b = 1 - a
    rt = a * rec[1:, None] + b * rec[:-1, None]
    pt = a * prec[1:, None] + b * prec[:-1, None]
    tt = a * thresholds[1:, None] + b * thresholds[:-1, None]
    f = _fmeasure(rt, pt)
    i, k = np.unravel_index(int(np.argmax(f)), f.shape)  # row-major: first segment, first k
    return float(tt[i, k]), float(rt[i, k]), float(pt[i, k]), float(f[i, k])


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop``: filled from both ends, so it hits ``stop`` exactly.

    The recall grid of ``Area_PR`` must be MATLAB's to the last bit: a recall value such as
    0.7 lies inside or outside the interpolation range depending on it.
    """
    n = int(math.floor((stop - start) / step + 1e-10))
    end = start + n * step
    k = np.arange(n + 1, dtype=np.float64)
    out = np.where(k <= n / 2, start + k * step, end - (n - k) * step)
    if n % 2 == 0:
        out[n // 2] = (start + end) / 2
    return out


_RECALL_GRID = _matlab_colon(0.0, 0.01, 1.0)


def area_pr(rec: np.ndarray, prec: np.ndarray) -> float:
    """BSDS ``Area_PR``: precision at recall 0:0.01:1 interpolated over the unique recalls.

    ``unique`` keeps the first occurrence of a repeated recall (the lowest threshold; MATLAB
    since R2013a, and pyEdgeEval); points outside the recall range count 0; a single recall
    value gives 0.
    """
    ru, first = np.unique(rec, return_index=True)
    if len(ru) <= 1:
        return 0.0
    p = np.interp(_RECALL_GRID, ru, prec[first], left=np.nan, right=np.nan)
    return float(np.nan_to_num(p, nan=0.0).sum() * 0.01)


def benchmark_from_counts(
    counts: np.ndarray, thresholds: np.ndarray | None = None
) -> dict[str, Any]:
    """All benchmark results from per-image counts ``[N, T, 4]`` (see :func:`edge_benchmark`)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[-1] != 4:
        raise ValueError(f"counts must be [N, T, 4], got shape {counts.shape}")
    n, t = counts.shape[:2]
    ts = bsds_thresholds(t) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if len(ts) != t:
        raise ValueError(f"{len(ts)} thresholds for counts of {t}")
    rec, prec, f = _rpf(counts.sum(axis=0))
    if n == 0:
        ods_t, ods_r, ods_p, ods = float(ts[0]), 0.0, 0.0, 0.0
        best = np.zeros(0, dtype=np.int64)
        ois_r = ois_p = ois = ap = 0.0
    else:
        ods_t, ods_r, ods_p, ods = best_interpolated_f(ts, rec, prec)
        _, _, f_img = _rpf(counts)
        # collect_eval_bdry: ff = find(F == max(F)); ... ff(end), the last of the ties.
        best = t - 1 - np.argmax(f_img[:, ::-1] == f_img.max(axis=1, keepdims=True), axis=1)
        r, p, fo = _rpf(counts[np.arange(n), best].sum(axis=0))
        ois_r, ois_p, ois = float(r), float(p), float(fo)
        ap = area_pr(rec, prec)
    return {
        "ODS": ods, "OIS": ois, "AP": ap,
        "ODS_threshold": ods_t, "ODS_recall": ods_r, "ODS_precision": ods_p,
        "OIS_recall": ois_r, "OIS_precision": ois_p,
        "thresholds": ts, "recall": rec, "precision": prec, "f": f,
        "image_threshold": ts[best], "image_f": f_img[np.arange(n), best] if n else best * 0.0,
    }


def scores_from_counts(counts: np.ndarray, thresholds: np.ndarray | None = None
                       ) -> dict[str, float]:
    """``{"ODS", "OIS", "AP"}`` from per-image counts ``[N, T, 4]``."""
    out = benchmark_from_counts(counts, thresholds)
    return {"ODS": out["ODS"], "OIS": out["OIS"], "AP": out["AP"]}


def bsds_thresholds(thresholds: int) -> np.ndarray:
    """``k / (thresholds + 1)`` for k = 1..thresholds, as in the BSDS code."""
    if thresholds < 1:
        raise ValueError("thresholds must be >= 1")
    return np.arange(1, thresholds + 1, dtype=np.float64) / (thresholds + 1)


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _image_job(job: tuple) -> tuple[np.ndarray, float]:
    """One image's counts and the CPU seconds they took (in the process that ran them)."""
    pred, annotators, valid, options = job
    start = time.process_time()
    counts = image_counts(pred, annotators, valid=valid, **options)
    return counts, time.process_time() - start


def _indexed_image_job(job: tuple[int, tuple]) -> tuple[int, np.ndarray, float]:
    counts, cpu = _image_job(job[1])
    return job[0], counts, cpu


def _worker_init() -> None:
    # One OpenCV thread per worker: the workers already fill the CPUs.
    cv2.setNumThreads(1)


_POOL_CONTEXT: Any = None


def _pool_context() -> Any:
    """The forkserver context, its server having imported this module.

    A plain fork copies the parent's threads' locks (tqdm's monitor, loggers, data loaders)
    and can hang the children; forkserver children come from a clean single-threaded server,
    and the preload makes each start in milliseconds (no re-import per worker).
    """
    global _POOL_CONTEXT
    if _POOL_CONTEXT is None:
        import multiprocessing

        _POOL_CONTEXT = multiprocessing.get_context("forkserver")
        _POOL_CONTEXT.set_forkserver_preload([__name__])
    return _POOL_CONTEXT


def score_images(
    items: Sequence[tuple[np.ndarray, list[np.ndarray], np.ndarray | None]],
    thresholds: np.ndarray,
    max_dist: float = 0.0075,
    mode: str = "exact",
    matcher: str = "optimal",
    nms: bool = False,
    workers: int | None = None,
    progress: bool = False,
    seed: int = CORRESPONDENCE_SEED,
    cpu_seconds: list[float] | None = None,
    on_image: Callable[[int, np.ndarray, float], None] | None = None,
) -> np.ndarray:
    """Counts ``[N, T, 4]`` of (pred, annotators, valid) images, ``workers`` processes at once
    (default: the CPU count; 1: in this process), with a progress bar if ``progress``; other
    arguments as :func:`image_counts`. Each image's CPU time is appended to ``cpu_seconds``
    (in the items' order); ``on_image(index, counts, cpu_s)`` is called as each finishes (in
    any order), so a caller can keep what a killed run had done."""
    _check_options(mode, matcher)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    options = {"thresholds": thresholds, "max_dist": max_dist, "mode": mode,
               "matcher": matcher, "nms": nms, "seed": seed}
    jobs = [(i, (pred, annotators, valid, options))
            for i, (pred, annotators, valid) in enumerate(items)]
    if not jobs:
        return np.zeros((0, len(thresholds), 4))
    workers = min(default_workers() if workers is None else workers, len(jobs))
    bar = {"total": len(jobs), "desc": f"edge {mode}", "leave": False,
           "disable": not progress, "dynamic_ncols": True}
    done: list[Any] = [None] * len(jobs)

    def collect(results: Iterable[tuple[int, np.ndarray, float]]) -> None:
        for i, counts, cpu in tqdm(results, **bar):
            done[i] = (counts, cpu)
            if on_image is not None:
                on_image(i, counts, cpu)

    if workers <= 1:
        collect(map(_indexed_image_job, jobs))
    else:
        with _pool_context().Pool(workers, _worker_init) as pool:
            # Unordered: one slow image does not hold back the callbacks of the others.
            collect(pool.imap_unordered(_indexed_image_job, jobs))
    if cpu_seconds is not None:
        cpu_seconds.extend(cpu for _, cpu in done)
    return np.stack([counts for counts, _ in done])


def _dataset_counts(
    preds: Sequence[np.ndarray],
    gts: Sequence[Sequence[np.ndarray] | np.ndarray],
    max_dist: float,
    ts: np.ndarray,
    valid: Sequence[np.ndarray | None] | None,
    mode: str,
    matcher: str,
    nms: bool,
    workers: int | None,
) -> np.ndarray:
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    items = []
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        single = isinstance(gt, (np.ndarray, torch.Tensor)) and gt.ndim == 2
        annotators = [to_numpy(gt)] if single else [to_numpy(a) for a in gt]
        items.append((to_numpy(pred), annotators, None if valid is None else valid[i]))
    return score_images(items, ts, max_dist, mode, matcher, nms, workers)


def edge_benchmark(
    preds: Sequence[np.ndarray],
    gts: Sequence[Sequence[np.ndarray] | np.ndarray],
    max_dist: float = 0.0075,
    thresholds: int = 99,
    valid: Sequence[np.ndarray | None] | None = None,
    mode: str = "exact",
    matcher: str = "optimal",
    nms: bool = False,
    workers: int | None = 1,
) -> dict[str, Any]:
    """The full benchmark: ODS, OIS, AP and what PR plots and reports need.

    Keys: "ODS", "OIS", "AP"; "ODS_threshold", "ODS_recall", "ODS_precision" (interpolated
    point); "OIS_recall", "OIS_precision"; "thresholds", "recall", "precision", "f" (dataset
    curve, float[T]); "image_threshold", "image_f" (each image's best threshold and F, [N]).
    Arguments as :func:`edge_ods_ois`.
    """
    ts = bsds_thresholds(thresholds)
    counts = _dataset_counts(preds, gts, max_dist, ts, valid, mode, matcher, nms, workers)
    return benchmark_from_counts(counts, ts)


def edge_ods_ois(
    preds: Sequence[np.ndarray],
    gts: Sequence[Sequence[np.ndarray] | np.ndarray],
    max_dist: float = 0.0075,
    thresholds: int = 99,
    valid: Sequence[np.ndarray | None] | None = None,
    mode: str = "exact",
    matcher: str = "optimal",
    nms: bool = False,
    workers: int | None = 1,
) -> dict[str, float]:
    """``{"ODS", "OIS", "AP"}`` of edge probability maps against per-annotator boundary maps.

    ``preds``: float[H, W] in [0, 1] per image; ``gts``: per image a list of bool[H, W] maps
    (one per annotator; a single 2-D array is one annotator); ``max_dist``: tolerance as a
    fraction of the image diagonal; ``valid``: optional per-image bool masks of the pixels to
    evaluate; ``mode``: "exact" (BSDS) or "approx"; ``matcher``: "optimal" or "csa" (exact
    mode); ``nms``: edge NMS of soft maps first; ``workers``: processes (None: CPU count). See
    the module docstring for the protocol.
    """
    ts = bsds_thresholds(thresholds)
    counts = _dataset_counts(preds, gts, max_dist, ts, valid, mode, matcher, nms, workers)
    return scores_from_counts(counts, ts)


class EdgeMetric(Metric):
    """ODS / OIS / AP of edge maps (see the module docstring for the protocol).

    ``update`` takes per-image float[H, W] probabilities and either the batch target
    long[B, H, W] (1 = boundary, 0 = not, ``ignore_index`` = ignored: removed from prediction
    and ground truth) or a per-image list whose entries are such a map, a list of bool[H, W]
    annotator maps, or a [K, H, W] stack of them (BSDS500's several annotators).
    Images are kept until their counts are first needed (``results``, ``compute``), then
    scored by ``workers`` processes at once (default: the CPU count) with a progress bar if
    ``progress``. ``nms`` (default on): edge NMS of soft maps before thresholding.
    :meth:`benchmark` gives the full results of :func:`edge_benchmark`.
    """

    def __init__(self, thresholds: int = 99, max_dist: float = 0.0075,
                 ignore_index: int = 255, mode: str = "exact", matcher: str = "optimal",
                 nms: bool = True, workers: int | None = None, progress: bool = False) -> None:
        _check_options(mode, matcher)
        super().__init__()
        self.thresholds = bsds_thresholds(thresholds)
        self.max_dist = max_dist
        self.ignore_index = ignore_index
        self.mode = mode
        self.matcher = matcher
        self.nms = nms
        self.workers = workers
        self.progress = progress

    @property
    def results(self) -> list[Any]:
        """Per-image counts ``[T, 4]``; images still waiting are scored first."""
        if self._pending:
            counts = score_images(self._pending, self.thresholds, self.max_dist, self.mode,
                                  self.matcher, self.nms, self.workers, self.progress)
            self._pending = []
            self._results.extend(counts)
        return self._results

    @results.setter
    def results(self, value: list[Any]) -> None:
        self._results = list(value)
        self._pending: list[tuple[np.ndarray, list[np.ndarray], np.ndarray | None]] = []

    def _annotators(self, target: Any) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Boundary maps and the valid mask (``None``: all pixels) of one image's target."""
        if isinstance(target, (list, tuple)):
            maps = [to_numpy(a) for a in target]
        else:
            arr = to_numpy(target)
            maps = [arr] if arr.ndim == 2 else list(arr)
        boundaries, valid = [], None
        for m in maps:
            if m.dtype == bool:
                boundaries.append(m)
                continue
            ignored = m == self.ignore_index
            if ignored.any():
                valid = ~ignored if valid is None else valid & ~ignored
            boundaries.append(m == 1)
        return boundaries, valid

    def process(self, preds: list, targets: Any) -> None:
        for pred, tgt in zip(preds, targets, strict=True):
            pred = to_numpy(pred).astype(np.float32)
            annotators, valid = self._annotators(tgt)
            for a in annotators:
                if a.shape != pred.shape:
                    raise ValueError(f"prediction shape {pred.shape} != target shape {a.shape}")
            self._pending.append((pred, annotators, valid))

    def _counts(self, results: list[Any]) -> np.ndarray:
        return np.stack(results) if results else np.zeros((0, len(self.thresholds), 4))

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        return scores_from_counts(self._counts(results), self.thresholds)

    def benchmark(self) -> dict[str, Any]:
        """ODS / OIS / AP plus the PR curve and per-image results (:func:`edge_benchmark`)."""
        return benchmark_from_counts(self._counts(self.results), self.thresholds)
