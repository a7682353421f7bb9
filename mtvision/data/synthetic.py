"""A deterministic synthetic multi-task "shapes" dataset in the standard layout.

Each RGB image shows 1 to 4 non-overlapping shapes (circle, square, triangle, star; all but
circles randomly rotated) over a textured background (stripes, checker, blobs, gradient) with
random colours, frequencies and orientations, plus Gaussian noise over the whole image. Labels
for every task are exact, because shapes never overlap or touch:

* det / instances: COCO boxes tight around each shape's pixel mask, polygons that rasterise
  (with pycocotools) back to exactly that mask, categories 1..4 = circle, square, triangle, star;
* seg: 0 = background, 1..4 = the shape category;
* edge: the pixels of each shape's mask that touch the outside (8-neighbourhood), never texture
  edges;
* cls: the background texture, 0..3 = stripes, checker, blobs, gradient.

Shape colours are drawn independently of the category and kept far (in RGB) from the two
background colours, so a shape is always visible but its colour says nothing about its class.

Every image is generated from its own seeded RNG, so the files are the same bytes on every run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mtvision.data.io import write_json_atomic

GENERATOR_NAME = "shapes"
# Bump when the drawing code changes, so cached datasets made by older code are regenerated.
GENERATOR_VERSION = 1

SHAPE_CLASSES = ["circle", "square", "triangle", "star"]
TEXTURE_CLASSES = ["stripes", "checker", "blobs", "gradient"]
SEG_CLASSES = ["background", *SHAPE_CLASSES]
SPLITS = ("train", "val")

_SUBPIXEL_SHIFT = 4  # cv2 drawing with 4 fractional bits, so small shapes keep their geometry
_MIN_SHAPE_COLOUR_DIST = 90.0  # RGB distance from the background colour segment
_NAME_RE = re.compile(r"^\d{6}\.(jpg|png)$")


# --------------------------------------------------------------------------------------------
# Backgrounds: a field t in [0, 1] that mixes two colours c1 -> c2.


def _soft(v: np.ndarray, k: float) -> np.ndarray:
    """Map v in [-1, 1] to [0, 1]; large k gives hard-edged patterns, small k smooth ones."""
    return 0.5 + 0.5 * np.tanh(k * v) / math.tanh(k)


def _rotated(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, math.pi)
    return xx * math.cos(a) + yy * math.sin(a), -xx * math.sin(a) + yy * math.cos(a)


def _stripes(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    u, _ = _rotated(rng, size)
    period = max(3.0, rng.uniform(5, 22) * s)
    v = np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
    return _soft(v, rng.uniform(1, 10))


def _checker(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    u, v = _rotated(rng, size)
    cell = max(3.0, rng.uniform(6, 20) * s)
    w = (np.sin(math.pi * u / cell + rng.uniform(0, 2 * math.pi))
         * np.sin(math.pi * v / cell + rng.uniform(0, 2 * math.pi)))
    return _soft(w, rng.uniform(2, 10))


def _blobs(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    blob = max(4.0, rng.uniform(8, 26) * s)
    grid = max(2, int(math.ceil(size / blob)) + 1)
    noise = rng.standard_normal((grid, grid)).astype(np.float32)
    n = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    n = (n - n.mean()) / (n.std() + 1e-6)
    return _soft(np.clip((n - rng.uniform(-0.4, 0.4)) / 2.0, -1, 1), rng.uniform(1.5, 6))


def _gradient(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    if rng.random() < 0.5:  # linear ramp at a random angle
        u, _ = _rotated(rng, size)
        t = (u - u.min()) / (u.max() - u.min() + 1e-6)
    else:  # radial, centred anywhere in or near the image
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        cx, cy = rng.uniform(-0.25, 1.25, 2) * size
        r = np.hypot(xx - cx, yy - cy)
        t = (r - r.min()) / (r.max() - r.min() + 1e-6)
    if rng.random() < 0.5:
        t = 1.0 - t
    return t ** math.exp(rng.uniform(-0.7, 0.7))


_TEXTURES = [_stripes, _checker, _blobs, _gradient]


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two background colours differing enough (RGB distance 60..170) for a visible texture."""
    c1 = rng.uniform(0, 255, 3)
    while True:
        d = rng.standard_normal(3)
        c2 = np.clip(c1 + d / np.linalg.norm(d) * rng.uniform(60, 170), 0, 255)
        if np.linalg.norm(c2 - c1) >= 60:
            return c1, c2


def _dist_to_segment(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(c - a, ab) / (np.dot(ab, ab) + 1e-9), 0, 1))
    return float(np.linalg.norm(c - (a + t * ab)))


def _shape_colour(rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """A random colour far from every background colour (they all lie on segment c1-c2)."""
    best, best_d = None, -1.0
    for _ in range(64):
        c = rng.uniform(0, 255, 3)
        d = _dist_to_segment(c, c1, c2)
        if d >= _MIN_SHAPE_COLOUR_DIST:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


# --------------------------------------------------------------------------------------------
# Shapes


def _shape_mask(category: int, cx: float, cy: float, radius: float, angle: float,
                inner: float, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    f = 1 << _SUBPIXEL_SHIFT
    if category == 0:
        cv2.circle(mask, (round(cx * f), round(cy * f)), round(radius * f), 1, -1,
                   cv2.LINE_8, _SUBPIXEL_SHIFT)
        return mask
    if category == 3:  # 5-point star: alternating outer / inner radius
        k = np.arange(10)
        r = np.where(k % 2 == 0, radius, radius * inner)
        a = angle + k * math.pi / 5
    else:
        n = 4 if category == 1 else 3
        r = np.full(n, radius)
        a = angle + np.arange(n) * 2 * math.pi / n
    pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
    cv2.fillPoly(mask, [np.round(pts * f).astype(np.int32)], 1, cv2.LINE_8, _SUBPIXEL_SHIFT)
    return mask


def mask_to_polygons(mask: np.ndarray) -> list[list[int]]:
    """COCO polygons that follow the pixel edges of ``mask`` exactly.

    ``cv2.findContours`` traces the centres of boundary pixels, which pycocotools would
    rasterise about half a pixel too small. Tracing the 2x-upsampled mask and mapping
    coordinate ``u`` to ``ceil(u / 2)`` puts every vertex on a pixel corner instead, so
    ``annToMask`` gives back exactly ``mask``.
    """
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = (c.reshape(-1, 2) + 1) // 2  # ceil(u / 2) for u >= 0
        if len(pts) >= 3:
            polys.append([int(v) for v in pts.reshape(-1)])
    return polys


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          int, list[dict[str, Any]]]:
    """One image: (rgb uint8, semseg uint8, edges uint8, texture id, instances)."""
    s = size / 128.0
    texture = int(rng.integers(len(_TEXTURES)))
    c1, c2 = _palette(rng)
    t = _TEXTURES[texture](rng, size, s).astype(np.float32)
    img = c1.astype(np.float32) + t[..., None] * (c2 - c1).astype(np.float32)

    semseg = np.zeros((size, size), np.uint8)
    edges = np.zeros((size, size), np.uint8)
    occupied = np.zeros((size, size), np.uint8)
    gap = max(2, round(3 * s))
    dilate_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    edge_kernel = np.ones((3, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    instances: list[dict[str, Any]] = []

    for _ in range(int(rng.integers(1, 5))):
        # The category is drawn before the placement loop so that large-looking categories
        # are not under-represented in crowded images.
        category = int(rng.integers(len(SHAPE_CLASSES)))
        for _try in range(40):  # rejection sampling of a free spot
            radius = max(2.0, rng.uniform(14, 50) * s / 2)
            cx, cy = rng.uniform(radius + 1, size - 2 - radius, 2)
            mask = _shape_mask(category, cx, cy, radius, rng.uniform(0, 2 * math.pi),
                               rng.uniform(0.38, 0.55), size)
            if mask.any() and not (occupied & mask).any():
                break
        else:
            continue
        occupied |= cv2.dilate(mask, dilate_kernel)
        m = mask.astype(bool)

        # Colour jitter: a random base colour with a gentle brightness ramp across the shape.
        colour = _shape_colour(rng, c1, c2).astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        ramp = rng.uniform(0, 20) * ((xx[m] - cx) * math.cos(a) + (yy[m] - cy) * math.sin(a))
        img[m] = colour + (ramp / radius)[:, None]

        semseg[m] = category + 1
        edges[m & ~cv2.erode(mask, edge_kernel).astype(bool)] = 255
        ys, xs = np.nonzero(m)
        x0, y0 = int(xs.min()), int(ys.min())
        instances.append({
            "category_id": category + 1,
            "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
            "area": int(m.sum()),
            "segmentation": mask_to_polygons(mask),
            "iscrowd": 0,
        })

    img += rng.normal(0.0, rng.uniform(3, 10), img.shape).astype(np.float32)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return rgb, semseg, edges, texture, instances


# --------------------------------------------------------------------------------------------
# Writing and caching


def _write_encoded(path: Path, ext: str, array: np.ndarray, params: list[int]) -> None:
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    buf.tofile(path)


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    """True when both annotation files exist, were made with ``params`` and their files exist."""
    for split in SPLITS:
        try:
            with open(root / "annotations" / f"{split}.json", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return False
        if data.get("mtvision", {}).get("generator") != params:
            return False
        for img in data.get("images", []):
            files = [f"images/{split}/{img['file_name']}", img.get("seg_file"),
                     img.get("edge_file")]
            if not all(f and (root / f).is_file() for f in files):
                return False
    return True


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Delete files this generator wrote before (NNNNNN.jpg/png) that the new set lacks."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if _NAME_RE.match(entry.name) and entry.name not in keep and entry.is_file():
            entry.unlink()


def generate_shapes(root: str | Path, num_train: int = 2000, num_val: int = 200,
                    image_size: int = 128, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the shapes dataset (splits "train" and "val") under ``root`` and return ``root``.

    Cached: when ``root`` already holds a complete dataset made with the same parameters
    (recorded as ``"mtvision": {"generator": ...}`` in the annotation JSONs) nothing is written.
    The annotation JSONs are removed first and written last (atomically), so an interrupted run
    is never mistaken for a complete one.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train and num_val must be >= 0, got {num_train}, {num_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    root = Path(root)
    params = {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "num_train": int(num_train),
              "num_val": int(num_val), "image_size": int(image_size), "seed": int(seed)}
    if not overwrite and _is_complete(root, params):
        return root

    for split in SPLITS:
        (root / "annotations" / f"{split}.json").unlink(missing_ok=True)
    meta = {"tasks": ["det", "seg", "edge", "cls"], "seg_classes": SEG_CLASSES,
            "cls_classes": TEXTURE_CLASSES, "multi_label": False, "generator": params}
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"}
                  for i, n in enumerate(SHAPE_CLASSES)]
    counts = {"train": int(num_train), "val": int(num_val)}
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, 95]
    png = [cv2.IMWRITE_PNG_COMPRESSION, 3]

    datasets = {}
    with tqdm(total=sum(counts.values()), desc=f"shapes -> {root}", unit="img") as bar:
        for split_index, split in enumerate(SPLITS):
            dirs = {k: root / k / split for k in ("images", "semseg", "edges")}
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            images, annotations = [], []
            for i in range(counts[split]):
                # One RNG per image: reproducible, and independent of the other images.
                rng = np.random.default_rng([int(seed), split_index, i])
                rgb, semseg, edges, texture, instances = _render(rng, image_size)
                name = f"{i:06d}"
                _write_encoded(dirs["images"] / f"{name}.jpg", ".jpg",
                               cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), jpeg)
                _write_encoded(dirs["semseg"] / f"{name}.png", ".png", semseg, png)
                _write_encoded(dirs["edges"] / f"{name}.png", ".png", edges, png)
                images.append({"id": i + 1, "file_name": f"{name}.jpg", "height": image_size,
                               "width": image_size, "seg_file": f"semseg/{split}/{name}.png",
                               "edge_file": f"edges/{split}/{name}.png", "cls": texture})
                for inst in instances:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **inst})
                bar.update(1)
            names = {f"{i:06d}" for i in range(counts[split])}
            _remove_stale(dirs["images"], {f"{n}.jpg" for n in names})
            _remove_stale(dirs["semseg"], {f"{n}.png" for n in names})
            _remove_stale(dirs["edges"], {f"{n}.png" for n in names})
            datasets[split] = {
                "info": {"description": "mtvision synthetic shapes",
                         "version": str(GENERATOR_VERSION)},
                "licenses": [], "images": images, "annotations": annotations,
                "categories": categories, "mtvision": meta,
            }
    for split in SPLITS:
        write_json_atomic(datasets[split], root / "annotations" / f"{split}.json")
    return root
