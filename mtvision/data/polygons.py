"""Instance-mask encodings: COCO polygons and RLE to masks and back (through pycocotools)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """uint8[h, w] (0/1): the union of COCO polygons ``[[x1, y1, x2, y2, ...], ...]``."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((h, w), np.uint8)
    rles = mask_utils.frPyObjects(polys, h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)


def rle_to_mask(rle: dict[str, Any], h: int, w: int) -> np.ndarray:
    """uint8[h, w] from a COCO RLE, compressed (``counts`` a string) or not (a list)."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, h, w)
    return mask_utils.decode(rle).astype(np.uint8)


def segmentation_to_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """uint8[h, w] from a COCO ``segmentation`` field: a polygon list or an RLE dict."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return rle_to_mask(segmentation, h, w)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a 2-D mask, ``counts`` as str so it is JSON-serialisable."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """The outer contours of a mask as COCO polygons (pixel-corner coordinates).

    Holes are filled (polygons cannot carry them); pieces with fewer than ``min_points``
    vertices are dropped. Contour points are pixel centres, so they are shifted by half a pixel
    outwards to the pixel corners the masks are drawn from.
    """
    m = np.ascontiguousarray(np.asarray(mask, np.uint8))
    if not m.any():
        return []
    # Upsample x2 so that the contour follows pixel corners, not centres: a 1-px wide mask
    # then still gives a polygon of positive area.
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < min_points:
            continue
        # In the x2 grid pixel p covers [2p, 2p + 1]; the outline of that pixel block is at
        # 2p (left/top) and 2p + 2 (right/bottom), i.e. +1 on the far side.
        cx, cy = pts[:, 0], pts[:, 1]
        x = np.where(cx % 2 == 1, (cx + 1) / 2, cx / 2)
        y = np.where(cy % 2 == 1, (cy + 1) / 2, cy / 2)
        polys.append(np.stack([x, y], axis=1).reshape(-1).round(2).tolist())
    return polys


def xyxy_to_xywh(box: Any) -> list[float]:
    """A box ``[x0, y0, x1, y1]`` as COCO's ``[x, y, width, height]``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """xyxy pixel-corner box of a mask's foreground, ``None`` when empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if not len(xs):
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def mask_to_segmentation(mask: np.ndarray, crowd: bool) -> list[list[float]] | dict[str, Any]:
    """COCO ``segmentation`` of a 0/1 mask: RLE for a crowd (as COCO does), else polygons when
    they redraw the mask exactly, and RLE when they cannot (polygons fill holes, e.g. a chair
    around the dog sitting in it)."""
    if not crowd:
        polys = mask_to_polygons(mask)
        if np.array_equal(polygons_to_mask(polys, *mask.shape), mask):
            return polys
    return mask_to_rle(mask)
