"""Edge detection: ODS / OIS F-measure and AP, approximating the BSDS boundary benchmark.

Protocol (after Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation",
TPAMI 2011, and the ``edgesEvalImg`` / ``edgesEvalDir`` code of the BSDS benchmark):

* thresholds ``t_k = k / (thresholds + 1)``, k = 1..thresholds; at each one the prediction is
  binarised (``pred > t``) and thinned to 1-px width with the Guo-Hall algorithm, the same as
  ``skimage.morphology.thin`` (re-implemented here to thin all thresholds at once);
* matching tolerance ``d = max_dist * image diagonal``;
* precision: a thinned predicted pixel is correct if a ground-truth pixel of any annotator lies
  within ``d``; recall: per annotator, a ground-truth pixel is found if a thinned predicted
  pixel lies within ``d``; per image and threshold the counts (cntR, sumR, cntP, sumP) are kept,
  recall counts summed over annotators;
* ODS: best F over thresholds of the dataset-level precision / recall (no interpolation between
  thresholds); OIS: F of the counts summed over images, each taken at that image's best
  threshold; AP: area under the precision-recall curve, using the monotone precision envelope
  (``max`` precision at recall >= r) sampled at the 101 recall points 0, 0.01, ..., 1 (the COCO
  rule; BSDS instead ``interp1``-s the raw curve and integrates only over the recall range
  reached).

This is an approximation: BSDS matches pixels one-to-one (``correspondPixels``, a bipartite
assignment), whereas here matching is by distance alone, so several predicted pixels may be
credited for one ground-truth pixel and vice versa; scores are therefore somewhat higher than
the official benchmark. The exact pixel-correspondence version is to come.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from mtvision.metrics.base import Metric, to_numpy

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
    """Thin every 2-D binary mask of a ``[N, H, W]`` stack; equals ``skimage.morphology.thin``.

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


def _disk_offsets(radius: float, width: int) -> np.ndarray:
    """Flat offsets (row stride ``width``) of the pixels within Euclidean ``radius``."""
    r = int(np.floor(radius))
    di, dj = np.mgrid[-r : r + 1, -r : r + 1]
    inside = di**2 + dj**2 <= radius**2
    return (di[inside] * width + dj[inside]).astype(np.int64)


def image_counts(
    pred: np.ndarray,
    gts: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = 0.0075,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-threshold counts ``float64[T, 4]`` = (cntR, sumR, cntP, sumP) of one image.

    ``pred`` float[H, W] in [0, 1]; ``gts`` one bool[H, W] boundary map per annotator; ``valid``
    bool[H, W] (pixels outside it are dropped from prediction and ground truth).
    """
    pred = np.asarray(pred, dtype=np.float32)
    h, w = pred.shape
    gts = [np.asarray(g, dtype=bool) for g in gts]
    for g in gts:
        if g.shape != pred.shape:
            raise ValueError(f"ground truth shape {g.shape} != prediction shape {pred.shape}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        gts = [g & valid for g in gts]
    dist = max_dist * float(np.hypot(h, w))

    # Thin only the bounding box of the lowest threshold's mask (the masks are nested); outside
    # it every mask is empty, and thin_stack pads the crop with the same zeros. Nested masks of
    # equal size are equal, so each run of equal masks is thinned once (a flat prediction, as
    # early in training, gives many).
    edges = np.zeros((len(thresholds), h, w), dtype=bool)
    binary = pred > thresholds.min()
    if binary.any():
        rows, cols = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        masks = pred[None, r0:r1, c0:c1] > thresholds[:, None, None]
        sizes = masks.sum(axis=(1, 2))
        new_run = np.r_[True, sizes[1:] != sizes[:-1]]
        thinned = thin_stack(masks[new_run])
        edges[:, r0:r1, c0:c1] = thinned[np.cumsum(new_run) - 1]
    if valid is not None:
        edges &= valid  # thin first, then drop: the mask's outline must not bend the edges
    sum_p = edges.sum(axis=(1, 2))

    # Precision: thinned pixels within `dist` of any annotator's boundary.
    gt_any = np.logical_or.reduce(gts) if gts else np.zeros((h, w), dtype=bool)
    if gt_any.any():
        near_gt = cv2.distanceTransform((~gt_any).astype(np.uint8), cv2.DIST_L2,
                                        cv2.DIST_MASK_PRECISE) <= dist
        cnt_p = (edges & near_gt).sum(axis=(1, 2))
    else:
        cnt_p = np.zeros(len(thresholds), dtype=np.int64)

    # Recall: per annotator, boundary pixels with a thinned pixel within `dist`, found by
    # looking up the disk of offsets around each boundary pixel (gt is sparse, so this beats a
    # distance transform per threshold).
    r = int(np.floor(dist))
    padded = np.zeros((len(thresholds), h + 2 * r, w + 2 * r), dtype=bool)
    padded[:, r : r + h, r : r + w] = edges
    padded = padded.reshape(len(thresholds), -1)
    disk = _disk_offsets(dist, w + 2 * r)
    cnt_r = np.zeros(len(thresholds), dtype=np.int64)
    sum_r = 0
    chunk = max(1, 4_000_000 // (len(thresholds) * len(disk)))  # bounds the gathered array
    for g in gts:
        ys, xs = np.nonzero(g)
        idx = (ys + r) * (w + 2 * r) + (xs + r)
        sum_r += idx.size
        for s in range(0, idx.size, chunk):
            near = padded[:, idx[s : s + chunk, None] + disk]  # [T, chunk, disk]
            cnt_r += near.any(axis=2).sum(axis=1)
    counts = np.zeros((len(thresholds), 4), dtype=np.float64)
    counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3] = cnt_r, sum_r, cnt_p, sum_p
    return counts


def _prf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision, F from (..., 4) counts; empty denominators give 0 (as BSDS)."""
    eps = np.finfo(np.float64).eps
    rec = counts[..., 0] / np.maximum(counts[..., 1], eps)
    prec = counts[..., 2] / np.maximum(counts[..., 3], eps)
    f = 2 * prec * rec / np.maximum(prec + rec, eps)
    return rec, prec, f


def _average_precision(rec: np.ndarray, prec: np.ndarray) -> float:
    """Area under the monotone precision envelope, sampled at recall 0, 0.01, ..., 1."""
    samples = np.linspace(0.0, 1.0, 101)
    # For each recall sample, the best precision among operating points reaching that recall.
    reach = rec[None, :] >= samples[:, None] - 1e-12
    env = np.where(reach, prec[None, :], 0.0).max(axis=1)
    return float(env.mean())


def scores_from_counts(counts: np.ndarray) -> dict[str, float]:
    """ODS, OIS and AP from per-image counts ``[N, T, 4]``."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        return {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}
    rec, prec, f = _prf(counts.sum(axis=0))
    ods = float(f.max())
    _, _, f_img = _prf(counts)
    best = f_img.argmax(axis=1)
    ois = float(_prf(counts[np.arange(len(counts)), best].sum(axis=0))[2])
    return {"ODS": ods, "OIS": ois, "AP": _average_precision(rec, prec)}


def bsds_thresholds(thresholds: int) -> np.ndarray:
    """``k / (thresholds + 1)`` for k = 1..thresholds, as in the BSDS code."""
    if thresholds < 1:
        raise ValueError("thresholds must be >= 1")
    return np.arange(1, thresholds + 1, dtype=np.float64) / (thresholds + 1)


def edge_ods_ois(
    preds: Sequence[np.ndarray],
    gts: Sequence[Sequence[np.ndarray] | np.ndarray],
    max_dist: float = 0.0075,
    thresholds: int = 99,
    valid: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """``{"ODS", "OIS", "AP"}`` of edge probability maps against per-annotator boundary maps.

    ``preds``: float[H, W] in [0, 1] per image; ``gts``: per image a list of bool[H, W] maps
    (one per annotator; a single array is one annotator); ``valid``: optional per-image bool
    masks of the pixels to evaluate. See the module docstring for the protocol.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    ts = bsds_thresholds(thresholds)
    counts = []
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        single = isinstance(gt, (np.ndarray, torch.Tensor)) and gt.ndim == 2
        annotators = [to_numpy(gt)] if single else [to_numpy(a) for a in gt]
        mask = None if valid is None else valid[i]
        counts.append(image_counts(to_numpy(pred), annotators, ts, max_dist, mask))
    return scores_from_counts(np.stack(counts) if counts else np.zeros((0, len(ts), 4)))


class EdgeMetric(Metric):
    """ODS / OIS / AP of edge maps (see the module docstring for the protocol).

    ``update`` takes per-image float[H, W] probabilities and the batch target long[B, H, W]
    (1 = boundary, 0 = not, 255 = ignore); each target is one annotator and ignored pixels are
    removed from both prediction and ground truth.
    """

    def __init__(self, thresholds: int = 99, max_dist: float = 0.0075, ignore_index: int = 255):
        super().__init__()
        self.thresholds = bsds_thresholds(thresholds)
        self.max_dist = max_dist
        self.ignore_index = ignore_index

    def process(self, preds: list, targets: Any) -> None:
        target = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else targets
        for pred, tgt in zip(preds, target, strict=True):
            pred = to_numpy(pred).astype(np.float32)
            if pred.shape != tgt.shape:
                raise ValueError(f"prediction shape {pred.shape} != target shape {tgt.shape}")
            valid = tgt != self.ignore_index
            self.results.append(
                image_counts(pred, [tgt == 1], self.thresholds, self.max_dist, valid)
            )

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        if not results:
            return {"ODS": 0.0, "OIS": 0.0, "AP": 0.0}
        return scores_from_counts(np.stack(results))
