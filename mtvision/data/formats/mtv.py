"""The project's own layout ("mtvision" format, used by the built-in demo data)::

    ROOT/
      images/SPLIT/NAME.jpg            RGB images
      semseg/SPLIT/NAME.png            class ids, grey or palette PNG (0 = background),
                                       255 = ignore
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

from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import TransformFn
from mtvision.data.formats.coco import CocoDataset
from mtvision.data.io import DataError, read_mask
from mtvision.data.sample import RawSample
from mtvision.data.transforms import MASK_IGNORE
from mtvision.registry import DATASETS

TASKS = ("det", "seg", "edge", "cls")


@DATASETS.register("mtvision")
class MTVDataset(CocoDataset):
    """Multi-task samples from ``ROOT/annotations/SPLIT.json`` and the files it names.

    The COCO part (categories, boxes, crowd regions, instance masks from ``segmentation``) is
    read as by the ``coco`` reader (``CocoDataset``), with images in ``ROOT/images/SPLIT``.
    Attributes: ``det_classes`` (category names, contiguous label ``i`` = ``cat_ids[i]``, COCO
    ids sorted ascending), ``seg_classes`` (index = class id in the semseg PNGs, 0 =
    background), ``cls_classes``, ``multi_label``, ``tasks`` (tasks this dataset labels),
    ``ann_file``, ``num_skipped``. Options common to all readers: ``ReaderDataset``.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid,
                         ann_file="annotations/{split}.json", img_dir="images/{split}", **common)

    def _setup_tasks(self, det_classes: list[str]) -> None:
        data = self.coco.data
        meta = data.get("mtvision") or {}
        categories = self.coco.categories
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
        self._setup(tasks, det_classes=det_classes, seg_classes=seg_classes,
                    cls_classes=cls_classes, multi_label=bool(meta.get("multi_label", False)),
                    has_instances=self.coco.has_segmentation)

    def read(self, index: int) -> RawSample:
        raw = super().read(index)  # image, size check, boxes (when det is wanted)
        info = self.images[index]
        img_path = self.img_dir / raw.file_name
        hw = raw.hw
        if self.wants("seg") and info.get("seg_file"):
            raw.seg = self._mask(info["seg_file"], hw, len(self.seg_classes))
        if self.wants("edge") and info.get("edge_file"):
            edge = self._mask(info["edge_file"], hw, None)
            # Binarise before the transforms so that their 255 padding stays "ignore".
            raw.edge = (edge >= 128).astype(np.uint8)
        if self.wants("cls") and info.get("cls") is not None:
            raw.cls = self._cls(info["cls"], img_path)
        return raw

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
