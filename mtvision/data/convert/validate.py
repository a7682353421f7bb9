"""``validate``: read a whole dataset with its reader and report every problem, plus statistics.

Unlike training (which stops at the first bad sample, or skips it with ``skip_invalid``), this
reads everything and lists all problems: missing files, corrupt images, labels out of range,
size mismatches, degenerate boxes and boxes outside the image.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtvision.data import formats as _formats  # noqa: F401 - registers the readers
from mtvision.data.io import DataError
from mtvision.registry import DATASETS, ConfigError, closest


def _box_problems(boxes: np.ndarray, hw: tuple[int, int], what: str) -> list[str]:
    h, w = hw
    out = []
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            out.append(f"{what} {k} is degenerate ({x0:g}, {y0:g}, {x1:g}, {y1:g})")
        elif x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
            # One pixel of slack: rounding in converters and 1-based formats.
            out.append(f"{what} {k} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) leaves the {w}x{h} image")
    return out


def validate_dataset(root: str | Path, fmt: str, split: str = "train",
                     options: dict[str, Any] | None = None, progress: bool = True,
                     max_problems: int = 1000) -> dict[str, Any]:
    """Read every sample of ``root`` (reader ``fmt``, ``split``) and return a report::

        {"format", "root", "split", "images", "valid_images", "problems": [{"index",
         "file", "problem"}], "stats": {"tasks": {task: labelled images}, "instances":
         {class: n}, "crowd": n, "seg_pixels": {class: n}, "cls": {class: n},
         "image_size": {"min": [h, w], "max": [h, w]}}}

    A reader that cannot even index the folder raises ``DataError``. At most ``max_problems``
    problems are listed (``problems_total`` counts them all).
    """
    if fmt not in DATASETS:
        raise ConfigError(f"unknown dataset format '{fmt}'{closest(fmt, DATASETS.names())}; "
                          f"available: {', '.join(DATASETS.names())}")
    ds = DATASETS.get(fmt)(root, split, **(options or {}))
    problems: list[dict[str, Any]] = []
    total_problems = 0
    labelled: Counter[str] = Counter()
    instances: Counter[int] = Counter()
    seg_pixels: Counter[int] = Counter()
    cls_counts: Counter[int] = Counter()
    crowd = 0
    sizes: list[tuple[int, int]] = []

    def report(index: int, file: str, problem: str) -> None:
        nonlocal total_problems
        total_problems += 1
        if len(problems) < max_problems:
            problems.append({"index": index, "file": file, "problem": problem})

    for i in tqdm(range(len(ds)), desc=f"validate {fmt}", disable=not progress,
                  dynamic_ncols=True):
        try:
            raw = ds.read(i)
            ds._check(raw)
        except DataError as e:
            report(i, "", str(e))
            continue
        bad = []
        if raw.boxes is not None:
            bad += _box_problems(raw.boxes, raw.hw, "box")
        if raw.crowd_boxes is not None:
            bad += _box_problems(raw.crowd_boxes, raw.hw, "crowd box")
        for problem in bad:
            report(i, raw.file_name, problem)
        if bad:
            continue
        sizes.append(raw.hw)
        for task in raw.labelled_tasks():
            if task in ds.tasks:
                labelled[task] += 1
        if raw.labels is not None:
            instances.update(int(v) for v in raw.labels)
        if raw.crowd_boxes is not None:
            crowd += len(raw.crowd_boxes)
        if raw.seg is not None:
            ids, counts = np.unique(raw.seg, return_counts=True)
            seg_pixels.update({int(k): int(c) for k, c in zip(ids, counts, strict=True)})
        if raw.cls is not None:
            cls_counts.update(raw.cls if isinstance(raw.cls, (list, tuple)) else [raw.cls])

    def named(counter: Counter[int], names: list[str]) -> dict[str, int]:
        return {(names[k] if 0 <= k < len(names) else str(k)): counter[k]
                for k in sorted(counter)}

    arr = np.array(sizes, dtype=np.int64).reshape(-1, 2)
    stats = {
        "tasks": {t: labelled[t] for t in ds.tasks},
        "instances": named(instances, ds.det_classes),
        "crowd": crowd,
        "seg_pixels": named(seg_pixels, ds.seg_classes),
        "cls": named(cls_counts, ds.cls_classes),
        "image_size": ({"min": arr.min(0).tolist(), "max": arr.max(0).tolist()}
                       if len(arr) else None),
    }
    if 255 in seg_pixels:
        stats["seg_pixels"]["ignore (255)"] = stats["seg_pixels"].pop("255")
    return {"format": fmt, "root": str(root), "split": split, "images": len(ds),
            "valid_images": len(sizes), "problems": problems, "problems_total": total_problems,
            "stats": stats}


def format_report(report: dict[str, Any]) -> str:
    """The report as text: problems first, then the statistics."""
    lines = [f"{report['format']} '{report['root']}' split '{report['split']}': "
             f"{report['images']} images, {report['valid_images']} valid, "
             f"{report['problems_total']} problems"]
    for p in report["problems"]:
        where = f" {p['file']}:" if p["file"] else ""
        lines.append(f"  [{p['index']}]{where} {p['problem']}")
    if report["problems_total"] > len(report["problems"]):
        lines.append(f"  ... and {report['problems_total'] - len(report['problems'])} more")
    st = report["stats"]
    lines.append("labelled images per task: "
                 + (", ".join(f"{t} {n}" for t, n in st["tasks"].items()) or "none"))
    if st["image_size"]:
        lines.append(f"image size (h, w): min {tuple(st['image_size']['min'])}, "
                     f"max {tuple(st['image_size']['max'])}")
    for key, title in (("instances", "instances per class"), ("seg_pixels", "seg pixels"),
                       ("cls", "images per class")):
        if st[key]:
            width = max(len(k) for k in st[key])
            lines.append(f"{title}:")
            lines += [f"  {k:<{width}}  {v}" for k, v in st[key].items()]
    if st["crowd"]:
        lines.append(f"crowd regions: {st['crowd']}")
    return "\n".join(lines)
