"""COCO instances JSON: boxes, polygon and RLE instance masks, crowd regions.

The JSON parsing (file loading, categories, per-image annotation index, box and mask decoding)
lives in ``CocoIndex`` so that the ``mtvision`` format, a COCO JSON with extra keys, and the
COCO <-> YOLO converters share it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image
from mtvision.data.polygons import polygons_to_mask, rle_to_mask
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS, closest


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """The parsed JSON of a COCO annotation file, with an ``images`` list."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"annotation file '{p}' not found") from None
    except (OSError, ValueError) as e:
        # json.JSONDecodeError is a ValueError; its message is one line with line and column.
        raise DataError(f"cannot read annotation file '{p}': {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"annotation file '{p}' has no 'images' list")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class CocoIndex:
    """A COCO JSON checked and indexed: categories sorted by id, images, annotations per image.

    Structural problems (missing keys, duplicate ids) raise ``DataError`` here, when the file
    is opened; problems of single annotations (unknown category, bad bbox or segmentation) are
    raised by ``box`` / ``mask`` when the image is read, so that ``skip_invalid`` can skip it.
    """

    def __init__(self, ann_file: str | Path, data: dict[str, Any] | None = None) -> None:
        self.ann_file = Path(ann_file)
        data = load_coco_json(self.ann_file) if data is None else data
        self.data = data
        where = f"annotation file '{self.ann_file}'"

        cats = data.get("categories") or []
        if not isinstance(cats, list) or not all(
                isinstance(c, dict) and isinstance(c.get("id"), int) and "name" in c
                for c in cats):
            raise DataError(f"{where}: 'categories' must be a list of objects with an integer "
                            "'id' and a 'name'")
        self.categories: list[dict[str, Any]] = sorted(cats, key=lambda c: c["id"])
        ids = [c["id"] for c in self.categories]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise DataError(f"{where}: category ids {dup} are declared more than once")
        self.declared_ids: set[int] = set(ids)

        self.images: list[dict[str, Any]] = data["images"]
        seen: set[Any] = set()
        for i, im in enumerate(self.images):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise DataError(f"{where}: images[{i}] needs an 'id' and a 'file_name'")
            if not isinstance(im["id"], int) or isinstance(im["id"], bool):
                raise DataError(f"{where}: images[{i}] has a non-integer id {im['id']!r}")
            if im["id"] in seen:
                raise DataError(f"{where}: image id {im['id']} is used more than once")
            seen.add(im["id"])

        anns = data.get("annotations") or []
        if not isinstance(anns, list):
            raise DataError(f"{where}: 'annotations' must be a list")
        self.anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
        orphans = 0
        for i, ann in enumerate(anns):
            if not isinstance(ann, dict) or "image_id" not in ann:
                aid = ann.get("id") if isinstance(ann, dict) else None
                raise DataError(f"{where}: annotations[{i}] (id {aid}) has no 'image_id'")
            if ann["image_id"] in seen:
                self.anns[ann["image_id"]].append(ann)
            else:
                orphans += 1
        if orphans:
            # Subsets made by deleting images often keep their annotations: harmless, but worth
            # knowing when the numbers do not add up.
            warnings.warn(f"{where}: {orphans} annotations refer to images not in 'images'; "
                          "ignored", stacklevel=2)
        self.has_segmentation = any(a.get("segmentation") for a in anns)

    def select(self, classes: Sequence[str] | None) -> list[dict[str, Any]]:
        """The categories to keep, in label order: all (sorted by id) or those named."""
        if classes is None:
            return list(self.categories)
        where = f"annotation file '{self.ann_file}'"
        if isinstance(classes, str) or not classes:
            raise DataError(f"{where}: option 'classes' must be a non-empty list of names")
        by_name: dict[str, dict[str, Any]] = {}
        for c in self.categories:
            if str(c["name"]) in by_name:
                raise DataError(f"{where}: category name '{c['name']}' is used by two ids, so "
                                "'classes' cannot select by name")
            by_name[str(c["name"])] = c
        out = []
        for name in classes:
            if str(name) not in by_name:
                raise DataError(f"{where}: no category named '{name}'"
                                f"{closest(str(name), list(by_name))}")
            if by_name[str(name)] in out:
                raise DataError(f"{where}: option 'classes' names '{name}' more than once")
            out.append(by_name[str(name)])
        return out

    def where(self, ann: dict[str, Any], image: str | Path) -> str:
        """Message prefix naming the JSON file, the annotation and its image."""
        return f"'{self.ann_file}': annotation {ann.get('id')} of image '{image}'"

    def check_category(self, ann: dict[str, Any], image: str | Path) -> int:
        cid = ann.get("category_id")
        if not isinstance(cid, int) or cid not in self.declared_ids:
            raise DataError(f"{self.where(ann, image)} has category_id {cid!r}, not among the "
                            f"{len(self.declared_ids)} declared category ids "
                            f"{_id_summary(sorted(self.declared_ids))}")
        return cid

    def box(self, ann: dict[str, Any], image: str | Path) -> list[float]:
        """The annotation's ``bbox`` (x, y, w, h) as xyxy pixel corners."""
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(_is_number(v) for v in bbox)):
            raise DataError(f"{self.where(ann, image)} has bad bbox {bbox!r} (expected "
                            "[x, y, width, height] numbers)")
        x, y, bw, bh = (float(v) for v in bbox)
        if bw <= 0 or bh <= 0:
            raise DataError(f"{self.where(ann, image)} has degenerate bbox {bbox!r} (width and "
                            "height must be > 0)")
        return [x, y, x + bw, y + bh]

    def polygons(self, ann: dict[str, Any], image: str | Path) -> list[list[float]]:
        """The annotation's polygon pieces of 3 or more points (COCO has a few shorter ones,
        which draw nothing); ``[]`` for an RLE or no segmentation."""
        seg = ann.get("segmentation")
        if not isinstance(seg, list):
            return []
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) % 2 == 0
                    and all(_is_number(v) for v in poly)):
                raise DataError(f"{self.where(ann, image)} has a malformed segmentation: "
                                "polygons must be lists of x, y numbers")
        return [[float(v) for v in p] for p in seg if len(p) >= 6]

    def mask(self, ann: dict[str, Any], image: str | Path, h: int, w: int) -> np.ndarray:
        """uint8[h, w] (0/1) of the annotation's polygons or RLE (compressed or not)."""
        seg = ann.get("segmentation")
        if not seg:
            raise DataError(f"{self.where(ann, image)} has no segmentation (instance masks "
                            "were asked for)")

        def bad(why: str) -> DataError:
            return DataError(f"{self.where(ann, image)} has a malformed segmentation: {why}")

        if isinstance(seg, list):
            return polygons_to_mask(self.polygons(ann, image), h, w)
        if not isinstance(seg, dict):
            raise bad(f"expected polygons or an RLE, got {type(seg).__name__}")
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, int) for v in size)):
            raise bad(f"RLE size {size!r} is not [height, width]")
        if list(size) != [h, w]:
            raise bad(f"RLE size {list(size)} differs from the image's [height, width] "
                      f"[{h}, {w}]")
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != h * w:
                raise bad(f"uncompressed RLE counts must be non-negative integers summing to "
                          f"height * width = {h * w}")
        elif not isinstance(counts, str):
            raise bad("RLE counts must be a string or a list of integers")
        try:
            m = rle_to_mask(seg, h, w)
        except Exception as e:  # pycocotools raises assorted types on bad input
            raise bad(f"RLE does not decode ({e})") from None
        if m.shape != (h, w):
            raise bad(f"RLE decodes to {m.shape[1]}x{m.shape[0]}, the image is {w}x{h}")
        return m


def _size_differs(info: dict[str, Any], h: int, w: int) -> bool:
    """Whether the image entry's height/width (when given) differ from the decoded image."""
    for key, actual in (("height", h), ("width", w)):
        if key in info:
            try:
                if int(info[key]) != actual:
                    return True
            except (TypeError, ValueError):
                return True
    return False


def _id_summary(ids: list[int]) -> str:
    if len(ids) <= 12:
        return str(ids)
    return f"({ids[0]}..{ids[-1]})"


@DATASETS.register("coco")
class CocoDataset(ReaderDataset):
    """COCO instances JSON (boxes, instance masks, crowd regions)::

        ROOT/annotations/instances_SPLIT.json     option ann_file (relative to ROOT)
        ROOT/SPLIT/NAME.jpg                       option img_dir; images[].file_name below it

    (COCO 2017: split ``train2017`` or ``val2017``.) ``{split}`` in ``ann_file`` and
    ``img_dir`` is replaced by the split; absolute paths are used as they are.

    Labels: categories sorted by id map to contiguous labels ``0..K-1`` (``cat_ids[i]`` is the
    COCO id of label ``i``, ``det_classes`` the names); option ``classes`` keeps only the
    categories of those names, labelled in that order, and drops the others' annotations.
    ``iscrowd`` annotations become crowd boxes (evaluation only). A box partly outside the
    image is clipped to it; one with no part inside, or with a width or height <= 0, is a
    ``DataError``. Masks come from polygons or RLE (compressed or not) and are decoded only
    when needed (``instance_masks``, ``derive_seg``, ``derive_edges: instances``). Every image
    in the JSON is a sample; one without annotations has no objects.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, ann_file: str = "annotations/instances_{split}.json",
                 img_dir: str = "{split}", classes: list[str] | None = None,
                 **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.ann_file = self.root / str(ann_file).replace("{split}", split)
        self.img_dir = self.root / str(img_dir).replace("{split}", split)
        self.coco = CocoIndex(self.ann_file)
        if not self.img_dir.is_dir():
            raise DataError(f"{self.source}: image folder '{self.img_dir}' not found")
        kept = self.coco.select(classes)
        self.cat_ids: list[int] = [int(c["id"]) for c in kept]
        self._cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.images = self.coco.images
        self._setup_tasks([str(c["name"]) for c in kept])

    def _setup_tasks(self, det_classes: list[str]) -> None:
        if not self.coco.categories:
            raise DataError(f"annotation file '{self.ann_file}' declares no categories")
        self._setup(["det"], det_classes=det_classes, has_instances=self.coco.has_segmentation)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return f"'{self.ann_file}'"

    def read(self, index: int) -> RawSample:
        info = self.images[index]
        file_name = str(info["file_name"])
        img_path = self.img_dir / file_name
        image = read_image(img_path)
        h, w = image.shape[:2]
        if _size_differs(info, h, w):
            raise DataError(f"image '{img_path}' is {w}x{h} but '{self.ann_file.name}' says "
                            f"{info.get('width')}x{info.get('height')}")
        raw = RawSample(image=image, image_id=int(info["id"]), file_name=file_name)
        if self.wants("det"):
            self._read_objects(raw, info, img_path)
        return raw

    def _read_objects(self, raw: RawSample, info: dict[str, Any], img_path: Path) -> None:
        h, w = raw.hw
        objs: dict[bool, tuple[list, list, list]] = {False: ([], [], []), True: ([], [], [])}
        for ann in self.coco.anns.get(info["id"], []):
            cid = self.coco.check_category(ann, img_path)
            box = self.coco.box(ann, img_path)
            if min(box[2], w) <= max(box[0], 0) or min(box[3], h) <= max(box[1], 0):
                # Partly outside is clipped (by the transforms); nothing inside is an error
                # rather than an object silently lost (as the COCO -> YOLO converter does).
                raise DataError(f"{self.coco.where(ann, img_path)} has bbox {ann.get('bbox')} "
                                f"outside the {w}x{h} image")
            if cid not in self._cat_to_label:
                continue  # a category left out by the 'classes' option
            boxes, labels, masks = objs[bool(ann.get("iscrowd", 0))]
            boxes.append(box)
            labels.append(self._cat_to_label[cid])
            if self._need_instances:
                masks.append(self.coco.mask(ann, img_path, h, w))
        for crowd, (boxes, labels, masks) in objs.items():
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            lab = np.asarray(labels, np.int64).reshape(-1)
            m = (np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8)) \
                if self._need_instances else None
            if crowd:
                raw.crowd_boxes, raw.crowd_labels, raw.crowd_masks = b, lab, m
            else:
                raw.boxes, raw.labels, raw.instance_masks = b, lab, m
