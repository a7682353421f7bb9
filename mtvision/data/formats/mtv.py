"""The project's own layout ("mtvision" format, used by the built-in demo data)::

    ROOT/
      images/SPLIT/NAME.jpg            RGB images
      semseg/SPLIT/NAME.png            uint8 class ids (0 = background), 255 = ignore
      edges/SPLIT/NAME.png             uint8, >= 128 marks a boundary pixel
      annotations/SPLIT.json           COCO instances JSON (boxes, categories)

Besides the standard COCO keys the JSON carries a top-level ``"mtvision"`` object::

    {"tasks": ["det", "seg", "edge", "cls"], "seg_classes": [...], "cls_classes": [...],
     "multi_label": false}

and each ``images`` entry may carry ``"seg_file"``, ``"edge_file"`` (paths relative to ROOT) and
``"cls"`` (an int, or a list of ints when multi-label). A task is labelled for an image when its
key is there (``det`` when "det" is in ``tasks``: an image without annotations then has no
objects), so partially labelled data needs no special format.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image, read_mask
from mtvision.data.sample import RawSample
from mtvision.data.transforms import MASK_IGNORE
from mtvision.registry import DATASETS

TASKS = ("det", "seg", "edge", "cls")


@DATASETS.register("mtvision")
class MTVDataset(ReaderDataset):
    """Multi-task samples from ``ROOT/annotations/SPLIT.json`` and the files it names.

    Attributes: ``det_classes`` (category names, contiguous label ``i`` = ``cat_ids[i]``, COCO
    ids sorted ascending), ``seg_classes`` (index = class id in the semseg PNGs, 0 =
    background), ``cls_classes``, ``multi_label``, ``tasks`` (tasks this dataset labels),
    ``ann_file``, ``num_skipped``. Options common to all readers: ``ReaderDataset``.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
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
        seg_classes = list(meta.get("seg_classes") or [])
        cls_classes = list(meta.get("cls_classes") or [])
        if "tasks" in meta:
            tasks = [t for t in TASKS if t in meta["tasks"]]
            unknown = [t for t in meta["tasks"] if t not in TASKS]
            if unknown:
                raise DataError(f"annotation file '{self.ann_file}': unknown tasks {unknown}; "
                                f"valid: {', '.join(TASKS)}")
        else:  # plain COCO file: detection only, unless images carry the other keys
            tasks = ["det"] if categories else []
            imgs = data["images"]
            for task, key in (("seg", "seg_file"), ("edge", "edge_file"), ("cls", "cls")):
                if any(key in im for im in imgs):
                    tasks.append(task)
        if "det" in tasks and not categories:
            raise DataError(f"annotation file '{self.ann_file}': task 'det' but no categories")
        for task, classes in (("seg", seg_classes), ("cls", cls_classes)):
            if task in tasks and not classes:
                raise DataError(f"annotation file '{self.ann_file}': task '{task}' but no "
                                f"'mtvision.{task}_classes'")
        self._setup(tasks, det_classes=[str(c["name"]) for c in categories],
                    seg_classes=seg_classes, cls_classes=cls_classes,
                    multi_label=bool(meta.get("multi_label", False)))

        self._cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.images: list[dict[str, Any]] = data["images"]
        self._anns: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations") or []:
            self._anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return f"'{self.ann_file}'"

    def read(self, index: int) -> RawSample:
        info = self.images[index]
        file_name = str(info["file_name"])
        img_path = self.root / "images" / self.split / file_name
        image = read_image(img_path)
        h, w = image.shape[:2]
        if ("height" in info and int(info["height"]) != h) or (
                "width" in info and int(info["width"]) != w):
            raise DataError(f"image '{img_path}' is {w}x{h} but '{self.ann_file.name}' says "
                            f"{info.get('width')}x{info.get('height')}")
        raw = RawSample(image=image, image_id=int(info["id"]), file_name=file_name)
        if self.wants("det"):
            raw.boxes, raw.labels = self._det(info, img_path)
        if self.wants("seg") and info.get("seg_file"):
            raw.seg = self._mask(info["seg_file"], (h, w), len(self.seg_classes))
        if self.wants("edge") and info.get("edge_file"):
            edge = self._mask(info["edge_file"], (h, w), None)
            # Binarise before the transforms so that their 255 padding stays "ignore".
            raw.edge = (edge >= 128).astype(np.uint8)
        if self.wants("cls") and info.get("cls") is not None:
            raw.cls = self._cls(info["cls"], img_path)
        return raw
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

    def _cls(self, value: Any, img_path: Path) -> int | list[int]:
        n = len(self.cls_classes)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise DataError(f"image '{img_path}' has cls label {v!r} out of range 0..{n - 1}")
        if not self.multi_label and len(values) != 1:
            raise DataError(f"image '{img_path}' has {len(values)} cls labels but the dataset "
                            "is single-label")
        return list(values) if self.multi_label else values[0]
