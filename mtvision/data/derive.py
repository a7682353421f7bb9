"""Labels derived from other labels: semantic masks from instances, edge maps from boundaries.

With these, a dataset that only has instance masks (COCO, Cityscapes) trains the segmentation and
edge heads too. Every function takes and returns plain numpy arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

IGNORE = 255


def semantic_from_instances(masks: np.ndarray, labels: np.ndarray, hw: tuple[int, int],
                            crowd_masks: np.ndarray | None = None) -> np.ndarray:
    """A uint8 class map: 0 = background, ``label + 1`` inside each instance, 255 on crowds.

    Larger instances are painted first, so where instances overlap the smaller one (usually the
    one in front) wins. Crowd regions are ignored rather than called background or object.
    """
    out = np.zeros(hw, np.uint8)
    masks = np.asarray(masks, bool).reshape(-1, *hw)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(masks) != len(labels):
        raise ValueError(f"{len(masks)} instance masks but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() + 1 >= IGNORE):
        raise ValueError(f"instance labels must lie in [0, {IGNORE - 1}), got {labels.max()}")
    for k in np.argsort(-masks.sum(axis=(1, 2)), kind="stable"):
        out[masks[k]] = labels[k] + 1
    if crowd_masks is not None:
        for m in np.asarray(crowd_masks, bool).reshape(-1, *hw):
            out[m & (out == 0)] = IGNORE
    return out


def instance_id_map(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """int32 map of instance ids (1..K, 0 = none), painted largest first like the semantics."""
    out = np.zeros(hw, np.int32)
    masks = np.asarray(masks, bool).reshape(-1, *hw)
    for k in np.argsort(-masks.sum(axis=(1, 2)), kind="stable"):
        out[masks[k]] = k + 1
    return out


def edges_from_labels(label_map: np.ndarray, thickness: int = 1,
                      ignore_index: int | None = IGNORE) -> np.ndarray:
    """A uint8 boundary map (1 = edge, 0 = not, 255 = ignore) of a label (or instance id) map.

    A pixel is on the boundary when a pixel within its ``(thickness + 1)``-wide square window
    holds another label: ``thickness`` 1 marks one pixel per label change (the pixel after it),
    ``thickness`` 2 the pixels on both sides, and so on. Pixels labelled ``ignore_index`` are
    neither compared nor scored: they stay 255.
    """
    if thickness < 1:
        raise ValueError(f"edge thickness must be >= 1, got {thickness}")
    lab = np.asarray(label_map).astype(np.float32)
    ignored = (np.asarray(label_map) == ignore_index) if ignore_index is not None else None
    kernel = np.ones((thickness + 1, thickness + 1), np.uint8)
    # Ignored pixels must not look like a label change: +inf never wins the min, -inf never the
    # max, so they drop out of both windows.
    hi = lab.copy()
    lo = lab.copy()
    if ignored is not None:
        hi[ignored] = -np.inf
        lo[ignored] = np.inf
    # Border pixels: replicate, so the image edge is not a boundary.
    mx = cv2.dilate(hi, kernel, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(lo, kernel, borderType=cv2.BORDER_REPLICATE)
    edge = (np.isfinite(mx) & np.isfinite(mn) & (mx != mn)).astype(np.uint8)
    if ignored is not None:
        edge[ignored] = IGNORE
    return edge


def edges_from_instances(masks: np.ndarray, hw: tuple[int, int], thickness: int = 1,
                         semantic: np.ndarray | None = None) -> np.ndarray:
    """Boundaries of instances (also between touching instances of one class).

    With ``semantic`` (a class map, 255 = ignore) the boundaries of the semantic regions are
    added and its ignored pixels stay ignored, so stuff classes without instances count too.
    """
    ids = instance_id_map(masks, hw)
    edge = edges_from_labels(ids, thickness, ignore_index=None)
    if semantic is not None:
        sem = edges_from_labels(semantic, thickness)
        edge = np.where(sem == IGNORE, IGNORE, np.maximum(edge, sem)).astype(np.uint8)
    return edge


def edges_from_annotators(boundaries: list[np.ndarray], mode: str = "mean",
                          threshold: float = 0.3) -> np.ndarray:
    """One training edge map from several annotators' boundary maps (BSDS500, NYUD).

    ``union``: an edge where any annotator drew one. ``mean``: the fraction of annotators is
    compared with ``threshold``: at or above it an edge, 0 not an edge, in between 255 (ignored,
    as in RCF, Liu et al. 2017, which ignores pixels fewer than eta = 0.3 of annotators marked).
    """
    if not boundaries:
        raise ValueError("no annotator boundary maps")
    stack = np.stack([np.asarray(b, bool) for b in boundaries])
    if mode == "union":
        return stack.any(axis=0).astype(np.uint8)
    if mode == "mean":
        frac = stack.mean(axis=0)
        out = np.full(frac.shape, IGNORE, np.uint8)
        out[frac >= threshold] = 1
        out[frac == 0] = 0
        return out
    raise ValueError(f"unknown annotator merge mode '{mode}'; use 'union' or 'mean'")
