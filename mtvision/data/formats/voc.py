"""Pascal VOC (Everingham et al., 2010) in the VOC2012 devkit layout: 20 object classes, boxes
from the XML annotations, semantic and instance masks from the palette PNGs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image, read_label_map
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOC_SEG_CLASSES = ("background", *VOC_CLASSES)
IMAGE_SETS = ("Main", "Segmentation")
VOID = 255  # object boundaries and "difficult" regions in the VOC masks

_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
_NUMERIC_NAME = re.compile(r"\d+(_\d+)*")


@dataclass
class VOCObject:
    """One ``<object>`` of a VOC XML: class name and contiguous label, pixel-corner box, flag."""

    name: str
    label: int
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass
class VOCAnnotation:
    """A parsed VOC XML file; ``width`` / ``height`` are 0 where ``<size>`` is absent."""

    path: Path
    width: int
    height: int
    objects: list[VOCObject]


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise DataError(f"VOC annotation '{path}': {where} has no <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"VOC annotation '{path}': {where} <{tag}> is {text.strip()!r}, "
                        "not a number") from None
    if not np.isfinite(value):
        raise DataError(f"VOC annotation '{path}': {where} <{tag}> is {text.strip()!r}")
    return value


def parse_voc_xml(path: str | Path) -> VOCAnnotation:
    """Parse a VOC XML file; every problem is a ``DataError`` naming the file.

    Boxes: VOC stores 1-based inclusive pixel indices, so the object covers pixels
    ``xmin..xmax`` counted from 1; as 0-based pixel corners (the ``RawSample`` convention) that
    is ``(xmin - 1, ymin - 1, xmax, ymax)``, of width ``xmax - xmin + 1``.
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except FileNotFoundError:
        raise DataError(f"VOC annotation '{p}': file not found") from None
    except ET.ParseError as e:
        raise DataError(f"VOC annotation '{p}': malformed XML ({e})") from None
    except OSError as e:
        raise DataError(f"VOC annotation '{p}': cannot read ({e.strerror or e})") from None
    if root.tag != "annotation":
        raise DataError(f"VOC annotation '{p}': root element is <{root.tag}>, expected "
                        "<annotation>")
    width = height = 0
    size = root.find("size")
    if size is not None:
        width = int(_number(size, "width", p, "<size>"))
        height = int(_number(size, "height", p, "<size>"))
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k + 1}"
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise DataError(f"VOC annotation '{p}': {where} has class {name!r}, not a VOC class")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"VOC annotation '{p}': {where} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bnd, t, p, f"{where} ({name})")
                                  for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"VOC annotation '{p}': {where} ({name}) has an empty box "
                            f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataError(f"VOC annotation '{p}': {where} ({name}) <difficult> is {flag!r}, "
                            "expected 0 or 1")
        objects.append(VOCObject(name, _CLASS_INDEX[name], (xmin - 1, ymin - 1, xmax, ymax),
                                 flag == "1"))
    return VOCAnnotation(p, width, height, objects)


def voc_image_ids(names: list[str]) -> list[int]:
    """Image ids: the digits of VOC names (``2007_000063`` -> 2007000063) when every name is
    numeric and they stay unique, else ``1..N`` in list order."""
    if names and all(_NUMERIC_NAME.fullmatch(n) for n in names):
        ids = [int(n.replace("_", "")) for n in names]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(1, len(names) + 1))


def instance_masks_for(ids: np.ndarray, ann: VOCAnnotation, path: Path) -> np.ndarray:
    """uint8[K, H, W] (0/1): object ``k`` of the XML is index ``k + 1`` of a SegmentationObject
    map (0 background, 255 void); an object without pixels gets an empty mask."""
    n = len(ann.objects)
    present = np.unique(ids)
    present = present[(present != 0) & (present != VOID)]
    if present.size and int(present.max()) > n:
        raise DataError(f"VOC object mask '{path}' has object index {int(present.max())} but "
                        f"'{ann.path.name}' lists {n} objects")
    return (ids[None] == np.arange(1, n + 1)[:, None, None]).astype(np.uint8)


@DATASETS.register("voc")
class VOCDataset(ReaderDataset):
    """Pascal VOC detection, semantic and instance segmentation (VOC2012 devkit layout)::

        ROOT/                              (the VOC2012 folder of VOCdevkit)
          JPEGImages/NAME.jpg              RGB images
          Annotations/NAME.xml             objects: class name, <bndbox> (1-based), <difficult>
          SegmentationClass/NAME.png       palette PNG: class index 0..20 (VOC_SEG_CLASSES),
                                           255 = void (ignored)
          SegmentationObject/NAME.png      palette PNG: object k of the XML has index k + 1,
                                           0 = background, 255 = void
          ImageSets/Main/SPLIT.txt         image names, one per line (detection lists)
          ImageSets/Segmentation/SPLIT.txt image names, one per line (segmentation lists)

    ``image_set``: ``"Main"`` or ``"Segmentation"`` chooses the list; ``None`` takes
    ``Main/SPLIT.txt`` and, when it is absent, ``Segmentation/SPLIT.txt``. Without an
    ``ImageSets`` folder the split is every image that has an XML or a SegmentationClass PNG.
    Each image is labelled for ``det`` when it has an XML and for ``seg`` when it has a
    SegmentationClass PNG; instance masks come from SegmentationObject where present.

    Boxes are 0-based pixel corners ``(xmin - 1, ymin - 1, xmax, ymax)`` of the XML values.
    ``use_difficult``: false (default) keeps ``difficult`` objects out of the training boxes and
    returns them as crowd boxes (ignore regions, as the VOC evaluation ignores them); true
    trains on them as ordinary boxes. ``det_classes`` are the 20 VOC classes (VOC_CLASSES),
    ``seg_classes`` background + the 20. ``image_id`` is the name's digits (2007_000063 ->
    2007000063; ``voc_image_ids``).
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, image_set: str | None = None,
                 use_difficult: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.use_difficult = bool(use_difficult)
        self.image_dir = self.root / "JPEGImages"
        self.xml_dir = self.root / "Annotations"
        self.class_dir = self.root / "SegmentationClass"
        self.object_dir = self.root / "SegmentationObject"
        if not self.image_dir.is_dir():
            raise DataError(f"VOC '{self.root}': folder '{self.image_dir}' not found")
        self.list_file = self._list_file(image_set)
        if self.list_file is not None:
            self.names = self._read_list(self.list_file)
        else:
            self.names = sorted(self._stems(self.xml_dir, ".xml")
                                | self._stems(self.class_dir, ".png"))
        if not self.names:
            where = (f"'{self.list_file}'" if self.list_file
                     else f"'{self.xml_dir}' or '{self.class_dir}'")
            raise DataError(f"VOC '{self.root}' split '{split}': no images in {where}")

        xmls = self._stems(self.xml_dir, ".xml")
        segs = self._stems(self.class_dir, ".png")
        objs = self._stems(self.object_dir, ".png")
        images = self._stems(self.image_dir, ".jpg")
        for name in self.names:
            if name not in images:
                raise DataError(f"VOC image '{self.image_dir / (name + '.jpg')}' not found "
                                f"(listed in {self.list_file or 'the annotations'})")
            if name not in xmls and name not in segs:
                raise DataError(f"VOC image '{name}' has neither '{self.xml_dir / name}.xml' nor "
                                f"'{self.class_dir / name}.png'")
        self.has_xml = [n in xmls for n in self.names]
        self.has_seg = [n in segs for n in self.names]
        self.has_objects = [n in objs for n in self.names]
        self.image_ids = voc_image_ids(self.names)
        native = [t for t, have in (("det", self.has_xml), ("seg", self.has_seg)) if any(have)]
        self._setup(native, det_classes=VOC_CLASSES, seg_classes=VOC_SEG_CLASSES,
                    has_instances=self.object_dir.is_dir() and "det" in native)

    def _list_file(self, image_set: str | None) -> Path | None:
        sets_dir = self.root / "ImageSets"
        if image_set is not None:
            canon = {s.lower(): s for s in IMAGE_SETS}.get(str(image_set).lower())
            if canon is None:
                raise DataError(f"VOC image_set must be one of {IMAGE_SETS} or null, got "
                                f"{image_set!r}")
            path = sets_dir / canon / f"{self.split}.txt"
            if not path.is_file():
                raise DataError(f"VOC split list '{path}' not found")
            return path
        if not sets_dir.is_dir():
            return None
        candidates = [sets_dir / s / f"{self.split}.txt" for s in IMAGE_SETS]
        for path in candidates:
            if path.is_file():
                return path
        raise DataError(f"VOC split '{self.split}': neither '{candidates[0]}' nor "
                        f"'{candidates[1]}' exists")

    @staticmethod
    def _read_list(path: Path) -> list[str]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read VOC split list '{path}': {e}") from None
        names = []
        for i, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 1:
                raise DataError(f"VOC split list '{path}' line {i}: expected one image name, got "
                                f"{line.strip()!r}")
            names.append(parts[0])
        return names

    @staticmethod
    def _stems(folder: Path, ext: str) -> set[str]:
        if not folder.is_dir():
            return set()
        # Exact suffix: the paths are rebuilt as NAME + ext, which must name the same file.
        return {p.stem for p in folder.iterdir() if p.suffix == ext and not p.name.startswith(".")}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def source(self) -> str:
        return f"VOC '{self.root}' split '{self.split}'"

    def xml_path(self, index: int) -> Path:
        return self.xml_dir / f"{self.names[index]}.xml"

    def object_path(self, index: int) -> Path:
        return self.object_dir / f"{self.names[index]}.png"

    def read(self, index: int) -> RawSample:
        name = self.names[index]
        img_path = self.image_dir / f"{name}.jpg"
        image = read_image(img_path)
        h, w = image.shape[:2]
        raw = RawSample(image=image, image_id=self.image_ids[index], file_name=img_path.name)
        if self.has_xml[index] and ("det" in self.tasks or self._need_instances):
            self._read_objects(index, raw, (h, w))
        # The seg map also feeds derived edges when "seg" itself is not requested.
        if self.has_seg[index] and ("seg" in self.tasks or self.derive_edges is not None):
            raw.seg = read_label_map(self.class_dir / f"{name}.png", "mask")
        return raw

    def _read_objects(self, index: int, raw: RawSample, hw: tuple[int, int]) -> None:
        ann = parse_voc_xml(self.xml_path(index))
        h, w = hw
        if ann.width and ann.height and (ann.width, ann.height) != (w, h):
            raise DataError(f"VOC annotation '{ann.path}' gives size {ann.width}x{ann.height}, "
                            f"its image is {w}x{h}")
        boxes = np.asarray([o.box for o in ann.objects], np.float32).reshape(-1, 4)
        labels = np.asarray([o.label for o in ann.objects], np.int64)
        crowd = np.asarray([o.difficult and not self.use_difficult for o in ann.objects], bool)
        raw.boxes, raw.labels = boxes[~crowd], labels[~crowd]
        raw.crowd_boxes, raw.crowd_labels = boxes[crowd], labels[crowd]
        if self._need_instances and self.has_objects[index]:
            path = self.object_path(index)
            ids = read_label_map(path, "mask")
            if ids.shape != hw:
                raise DataError(f"VOC object mask '{path}' is {ids.shape[1]}x{ids.shape[0]}, "
                                f"its image is {w}x{h}")
            masks = instance_masks_for(ids, ann, path)
            raw.instance_masks, raw.crowd_masks = masks[~crowd], masks[crowd]
