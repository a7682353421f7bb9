"""Drawing multi-task predictions on an image: segmentation, edges, boxes, image class.

Predictions follow ``mtvision.models.heads.base`` (one image, in that image's pixels); numpy
arrays and torch tensors are both accepted.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

EDGE_COLOR = (255, 255, 0)  # yellow: stands out on both the photo and the palette colours
IGNORE_INDEX = 255


@lru_cache(maxsize=8)
def _palette(n: int) -> np.ndarray:
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        # The Pascal VOC palette: spreads the bits of the class id over the three channels,
        # so neighbouring ids get very different colours and 0 is black.
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    out.setflags(write=False)
    return out


def palette(num_colors: int = 256) -> np.ndarray:
    """A fixed, deterministic uint8[num_colors, 3] RGB palette (Pascal VOC's; 0 is black)."""
    if not 1 <= num_colors <= 256:
        raise ValueError(f"num_colors must be in [1, 256], got {num_colors}")
    return _palette(num_colors)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def colorize_segmentation(seg: Any) -> np.ndarray:
    """An RGB uint8 image of a class map (ids 0..255; 255, "ignore", gets VOC's void colour)."""
    seg = _numpy(seg)
    if seg.ndim != 2:
        raise ValueError(f"segmentation must be a 2-D class map, got shape {seg.shape}")
    return palette(256)[np.clip(seg, 0, 255).astype(np.intp)]


def _class_color(label: int) -> tuple[int, int, int]:
    # Offset by one so class 0 does not get the palette's black.
    r, g, b = palette(256)[(label + 1) % 256]
    return int(r), int(g), int(b)


def _name(names: list[str] | None, label: int) -> str:
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


def _sizes(image: np.ndarray) -> tuple[float, int, int]:
    """Font scale, text thickness and box line width readable at this image size."""
    side = min(image.shape[:2])
    scale = float(np.clip(side / 700.0, 0.35, 1.2))
    return scale, max(1, round(scale * 1.5)), max(1, round(side / 240))


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int],
           scale: float, thickness: int) -> None:
    """Text on a filled box whose top-left corner is (x, y), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    h, w = image.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 2)))
    y = int(np.clip(y, 0, max(0, h - th - base - 2)))
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 2), color, cv2.FILLED)
    # Dark text on light boxes and light text on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    fg = (0, 0, 0) if luma > 128 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, fg,
                thickness, cv2.LINE_AA)


def draw_predictions(image: np.ndarray, pred: dict[str, Any],
                     classes: dict[str, list[str]] | None = None, alpha: float = 0.45,
                     edge_thresh: float = 0.5) -> np.ndarray:
    """A new RGB uint8 image with the predictions of ``pred`` drawn over ``image``.

    Layers, bottom to top: the segmentation blended with ``alpha`` (class 0, background, and
    255, ignore, left transparent), edge pixels with probability > ``edge_thresh`` in yellow,
    detection boxes labelled "class score", and the image class with its probability in the
    top-left corner. ``classes`` maps a task to its class names (ids are shown when absent).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    classes = classes or {}
    h, w = image.shape[:2]
    out = image.astype(np.float32)

    seg = pred.get("seg")
    if seg is not None:
        seg = _numpy(seg)
        if seg.shape != (h, w):
            raise ValueError(f"segmentation shape {seg.shape} differs from the image's {(h, w)}")
        mask = (seg > 0) & (seg != IGNORE_INDEX)
        colors = colorize_segmentation(seg).astype(np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colors[mask]

    edge = pred.get("edge")
    if edge is not None:
        edge = _numpy(edge)
        if edge.shape != (h, w):
            raise ValueError(f"edge map shape {edge.shape} differs from the image's {(h, w)}")
        out[edge > edge_thresh] = EDGE_COLOR

    canvas = np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    scale, thickness, line = _sizes(canvas)

    det = pred.get("det")
    if det is not None:
        boxes = _numpy(det["boxes"]).reshape(-1, 4)
        scores = _numpy(det["scores"]).reshape(-1)
        labels = _numpy(det["labels"]).reshape(-1).astype(int)
        # Lowest score first so the most confident boxes end up on top.
        for i in np.argsort(scores, kind="stable"):
            x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
            color = _class_color(int(labels[i]))
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, line)
            text = f"{_name(classes.get('det'), int(labels[i]))} {float(scores[i]):.2f}"
            (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            # Above the box when there is room, else just inside its top edge.
            ty = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
            _label(canvas, text, x1, ty, color, scale, thickness)

    cls = pred.get("cls")
    if cls is not None:
        names = classes.get("cls")
        if cls.get("labels"):  # multi-label: every class above its threshold
            probs = _numpy(cls["probs"]).reshape(-1)
            text = ", ".join(f"{_name(names, int(k))} {float(probs[int(k)]):.2f}"
                             for k in cls["labels"])
        else:
            text = f"{_name(names, int(cls['label']))} {float(cls['score']):.2f}"
        _label(canvas, text, 2, 2, (32, 32, 32), scale, thickness)
    return canvas


def normals_to_rgb(normals: Any) -> np.ndarray:
    """Unit normals float[H, W, 3] as RGB uint8, the usual (n + 1) / 2 picture of them."""
    n = _numpy(normals)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be (H, W, 3), got shape {n.shape}")
    return np.clip((n + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
