"""The dataset reader for the standard layout (see ``mtvision.data``)."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mtvision.data.io import DataError, read_image, read_mask
from mtvision.data.transforms import MASK_IGNORE, TransformResult, build_transforms
from mtvision.registry import DATASETS

TASKS = ("det", "seg", "edge", "cls")

TransformFn = Callable[..., TransformResult]


@DATASETS.register("mtvision")
class MTVDataset(Dataset):
    """Multi-task samples from ``ROOT/annotations/SPLIT.json`` and the files it names.

    Attributes: ``det_classes`` (category names, contiguous label ``i`` = ``cat_ids[i]``, COCO
    ids sorted ascending), ``seg_classes`` (index = class id in the semseg PNGs, 0 =
    background), ``cls_classes``, ``multi_label``, ``tasks`` (tasks this dataset labels),
    ``ann_file``, ``num_skipped``.

    ``transforms`` is a ``build_transforms`` pipeline; without one every image is only
    normalised (``build_transforms(None, its own size, train=False)``), so samples keep the
    same format. With ``skip_invalid`` an unreadable or inconsistent sample is replaced by the
    next valid one (with a warning and ``num_skipped += 1``; with DataLoader workers each worker
    counts in its own copy); otherwise it raises ``DataError``.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.skip_invalid = skip_invalid
        self.num_skipped = 0
        self.aug_seed: int | None = None
        self.ann_file = self.root / "annotations" / f"{split}.json"
        try:
            with open(self.ann_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DataError(f"annotation file '{self.ann_file}' not found") from None
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read annotation file '{self.ann_file}': {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"annotation file '{self.ann_file}' has no 'images' list")

        meta = data.get("mtvision") or {}
        categories = sorted(data.get("categories") or [], key=lambda c: c["id"])
        self.cat_ids: list[int] = [int(c["id"]) for c in categories]
        self.det_classes: list[str] = [str(c["name"]) for c in categories]
        self.seg_classes: list[str] = list(meta.get("seg_classes") or [])
        self.cls_classes: list[str] = list(meta.get("cls_classes") or [])
        self.multi_label: bool = bool(meta.get("multi_label", False))
        if "tasks" in meta:
            self.tasks: list[str] = [t for t in TASKS if t in meta["tasks"]]
            unknown = [t for t in meta["tasks"] if t not in TASKS]
            if unknown:
                raise DataError(f"annotation file '{self.ann_file}': unknown tasks {unknown}; "
                                f"valid: {', '.join(TASKS)}")
        else:  # plain COCO file: detection only, unless images carry the other keys
            self.tasks = ["det"] if categories else []
            imgs = data["images"]
            for task, key in (("seg", "seg_file"), ("edge", "edge_file"), ("cls", "cls")):
                if any(key in im for im in imgs):
                    self.tasks.append(task)
        if "det" in self.tasks and not categories:
            raise DataError(f"annotation file '{self.ann_file}': task 'det' but no categories")
        for task, classes in (("seg", self.seg_classes), ("cls", self.cls_classes)):
            if task in self.tasks and not classes:
                raise DataError(f"annotation file '{self.ann_file}': task '{task}' but no "
                                f"'mtvision.{task}_classes'")

        self._cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.images: list[dict[str, Any]] = data["images"]
        self._anns: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations") or []:
            self._anns[ann["image_id"]].append(ann)
        self._default_transforms: dict[tuple[int, int], TransformFn] = {}

    @property
    def num_classes(self) -> dict[str, int]:
        """Number of classes per labelled task."""
        n = {"det": len(self.det_classes), "seg": len(self.seg_classes),
             "cls": len(self.cls_classes), "edge": 1}
        return {t: n[t] for t in self.tasks}

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, seed: int) -> None:
        """Make augmentations a function of (seed, sample index): the same in any worker,
        in any order, and after a resume."""
        self.aug_seed = seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_invalid:
            return self._load(index)
        n = len(self.images)
        for k in range(n):
            i = (index + k) % n
            try:
                return self._load(i)
            except DataError as e:
                self.num_skipped += 1
                warnings.warn(f"skipping invalid sample {i}: {e}", stacklevel=2)
        raise DataError(f"no valid sample in '{self.ann_file}' ({n} images)")

    # ----------------------------------------------------------------------------------------

    def _load(self, index: int) -> dict[str, Any]:
        info = self.images[index]
        file_name = str(info["file_name"])
        img_path = self.root / "images" / self.split / file_name
        image = read_image(img_path)
        h, w = image.shape[:2]
        if ("height" in info and int(info["height"]) != h) or (
                "width" in info and int(info["width"]) != w):
            raise DataError(f"image '{img_path}' is {w}x{h} but '{self.ann_file.name}' says "
                            f"{info.get('width')}x{info.get('height')}")

        boxes = np.zeros((0, 4), np.float32)
        labels = np.zeros((0,), np.int64)
        if "det" in self.tasks:
            boxes, labels = self._det(info, img_path)
        masks: dict[str, np.ndarray] = {}
        if "seg" in self.tasks and info.get("seg_file"):
            masks["seg"] = self._mask(info["seg_file"], (h, w), len(self.seg_classes))
        if "edge" in self.tasks and info.get("edge_file"):
            edge = self._mask(info["edge_file"], (h, w), None)
            # Binarise before the transforms so that their 255 padding stays "ignore".
            masks["edge"] = (edge >= 128).astype(np.uint8)

        transforms = self.transforms or self._default(h, w)
        if self.aug_seed is not None and hasattr(transforms, "reseed"):
            transforms.reseed(self.aug_seed * 1_000_003 + index)
        out = transforms(image, boxes, labels, masks)

        targets: dict[str, Any] = {}
        if "det" in self.tasks:
            targets["det"] = {"boxes": torch.from_numpy(out.boxes.astype(np.float32)),
                              "labels": torch.from_numpy(out.labels.astype(np.int64))}
        for task in ("seg", "edge"):
            if task in out.masks:
                targets[task] = torch.from_numpy(out.masks[task].astype(np.int64))
        if "cls" in self.tasks and info.get("cls") is not None:
            targets["cls"] = self._cls(info["cls"], img_path)
        return {"image": out.image, "image_id": int(info["id"]), "file_name": file_name,
                "orig_size": (h, w), "targets": targets}

    def _default(self, h: int, w: int) -> TransformFn:
        if (h, w) not in self._default_transforms:
            self._default_transforms[(h, w)] = build_transforms(None, (h, w), train=False)
        return self._default_transforms[(h, w)]

    def _det(self, info: dict[str, Any], img_path: Path) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels = [], []
        for ann in self._anns.get(info["id"], []):
            if ann.get("iscrowd", 0):
                continue  # crowd regions are not single objects: not training boxes
            cid = ann.get("category_id")
            if cid not in self._cat_to_label:
                raise DataError(f"annotation {ann.get('id')} of image '{img_path}' has "
                                f"category_id {cid}, not among {self.cat_ids}")
            bbox = ann.get("bbox")
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
                raise DataError(f"annotation {ann.get('id')} of image '{img_path}' has "
                                f"bad bbox {bbox!r}")
            x, y, bw, bh = (float(v) for v in bbox)
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self._cat_to_label[cid])
        return (np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray(labels, np.int64).reshape(-1))

    def _mask(self, rel: str, hw: tuple[int, int], num_classes: int | None) -> np.ndarray:
        path = self.root / rel
        m = read_mask(path)
        if m.shape != hw:
            raise DataError(f"mask '{path}' is {m.shape[1]}x{m.shape[0]}, its image is "
                            f"{hw[1]}x{hw[0]}")
        if num_classes is not None:
            bad = (m >= num_classes) & (m != MASK_IGNORE)
            if bad.any():
                raise DataError(f"mask '{path}' has class id {int(m[bad].max())} out of range "
                                f"0..{num_classes - 1} (or {MASK_IGNORE} = ignore)")
        return m

    def _cls(self, value: Any, img_path: Path) -> torch.Tensor:
        n = len(self.cls_classes)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise DataError(f"image '{img_path}' has cls label {v!r} out of range 0..{n - 1}")
        if self.multi_label:
            target = torch.zeros(n, dtype=torch.float32)
            target[list(values)] = 1.0
            return target
        if len(values) != 1:
            raise DataError(f"image '{img_path}' has {len(values)} cls labels but the dataset "
                            "is single-label")
        return torch.tensor(values[0], dtype=torch.int64)
