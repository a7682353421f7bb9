"""Ultralytics YOLO text labels: detection boxes and segmentation polygons, normalised.

The pieces (``data.yaml`` parsing, image lists, label paths, label-line parsing) are public
functions so that the YOLO -> COCO converter reads exactly what the reader reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import IMAGE_SUFFIXES, DataError, read_image, read_path_list
from mtvision.data.polygons import polygons_to_mask
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS

# Normalised coordinates may leave [0, 1] by this much (rounding in converters and labelling
# tools); they are then clipped to the image.
COORD_TOLERANCE = 0.01


@dataclass
class YoloObject:
    """One label line in pixels: ``box`` xyxy, ``polygon`` [x1, y1, ...] or None for a box line."""

    label: int
    box: list[float]
    polygon: list[float] | None
    line: int


def load_data_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in an Ultralytics dataset YAML."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise DataError(f"dataset file '{p}' not found") from None
    except yaml.YAMLError as e:
        # YAML's own message spans lines and names the file again: keep the line and problem.
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise DataError(f"cannot read dataset file '{p}':{where} invalid YAML ({problem})") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read dataset file '{p}': {' '.join(str(e).split())}") \
            from None
    if not isinstance(cfg, dict):
        raise DataError(f"dataset file '{p}' is not a YAML mapping")
    return cfg


def parse_names(names: Any, where: str, nc: Any = None) -> list[str]:
    """Class names from a list or an ``{id: name}`` mapping with ids 0..N-1; checks ``nc``."""
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class ids 0..N-1") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(by_id) - 1}, got "
                            f"{sorted(by_id)}")
        out = [by_id[i] for i in range(len(by_id))]
    elif isinstance(names, (list, tuple)):
        out = [str(n) for n in names]
    else:
        raise DataError(f"{where}: 'names' must be a list or an {{id: name}} mapping")
    if not out:
        raise DataError(f"{where}: 'names' is empty")
    if nc is not None and nc != len(out):
        raise DataError(f"{where}: 'nc' is {nc} but 'names' has {len(out)} classes")
    return out


def dataset_base(cfg: dict[str, Any], yaml_path: Path) -> Path:
    """The dataset folder: ``path`` (relative to the YAML's folder) or the YAML's folder."""
    base = yaml_path.parent
    if cfg.get("path"):
        base = base / str(cfg["path"])
        if not base.is_dir():
            raise DataError(f"dataset file '{yaml_path}': 'path' folder '{base}' not found")
    return base


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())


def split_images(entry: Any, base: Path, where: str) -> list[Path]:
    """Images of a split entry: a folder (searched recursively), a .txt list of image paths
    (relative ones are relative to the list's folder), or a list of those."""
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    out: list[Path] = []
    for e in entries:
        if not isinstance(e, str) or not e:
            raise DataError(f"{where}: expected a folder or a .txt list, got {e!r}")
        p = base / e
        if p.is_dir():
            out += _images_in(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            out += [file for _, file in read_path_list(p)]
        else:
            raise DataError(f"{where}: '{p}' is neither a folder nor a .txt list of images")
    return list(dict.fromkeys(out))  # a file listed twice is one sample


def label_path(image: Path) -> Path:
    """``.../images/.../NAME.jpg`` -> ``.../labels/.../NAME.txt`` (the last ``images``
    component is replaced, as Ultralytics does; without one, the .txt sits beside the image)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, num_classes: int, w: int, h: int) -> list[YoloObject]:
    """The objects of one label file, in pixels of a ``w`` x ``h`` image.

    Lines: ``cls cx cy bw bh`` (a box) or ``cls x1 y1 x2 y2 x3 y3 ...`` (a polygon, its box
    the polygon's bounds), normalised to [0, 1]; blank lines are skipped. Any bad line raises
    ``DataError`` naming the file and the line number.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"cannot read label file '{path}': not UTF-8 text") from None
    except OSError as e:
        raise DataError(f"cannot read label file '{path}': {e.strerror or e}") from None
    objects = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue

        def bad(problem: str, n: int = n) -> DataError:
            return DataError(f"label file '{path}' line {n}: {problem}")

        try:
            values = [float(t) for t in tokens]
        except ValueError:
            tok = next(t for t in tokens if not _is_float(t))
            raise bad(f"non-numeric value '{tok}'") from None
        if not all(math.isfinite(v) for v in values):
            raise bad("non-finite value")
        cls, coords = values[0], values[1:]
        if not cls.is_integer():
            raise bad(f"class id {tokens[0]} is not an integer")
        if not 0 <= cls < num_classes:
            raise bad(f"class id {int(cls)} out of range 0..{num_classes - 1}")
        if len(coords) % 2:
            raise bad(f"odd number of coordinates ({len(coords)}); expected x y pairs")
        if len(coords) != 4 and len(coords) < 6:
            raise bad(f"{len(coords)} coordinates; expected a box (cx cy w h) or a polygon "
                      "(3 or more x y points)")
        out = [v for v in coords if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE]
        if out:
            raise bad(f"coordinate {out[0]:g} outside [0, 1] (coordinates must be normalised "
                      "by the image size)")
        c = np.clip(np.asarray(coords, np.float64), 0.0, 1.0)
        if len(coords) == 4:
            cx, cy, bw, bh = c
            if bw <= 0 or bh <= 0:
                raise bad("box width and height must be > 0")
            box = [max(0.0, (cx - bw / 2) * w), max(0.0, (cy - bh / 2) * h),
                   min(float(w), (cx + bw / 2) * w), min(float(h), (cy + bh / 2) * h)]
            objects.append(YoloObject(int(cls), [float(v) for v in box], None, n))
        else:
            xs, ys = c[0::2] * w, c[1::2] * h
            if xs.max() <= xs.min() or ys.max() <= ys.min():
                raise bad("polygon has zero width or height")
            poly = np.stack([xs, ys], axis=1).reshape(-1)
            objects.append(YoloObject(int(cls), [float(xs.min()), float(ys.min()),
                                                 float(xs.max()), float(ys.max())],
                                      poly.tolist(), n))
    return objects


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def image_ids(images: Sequence[Path]) -> list[int]:
    """COCO-style ids: the file stems when all are distinct integers (COCO names such as
    ``000000000009``, so a COCO -> YOLO -> COCO round trip keeps them), else 1..N."""
    stems = [p.stem for p in images]
    if stems and all(s.isdigit() for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(1, len(images) + 1))


@dataclass
class YoloSplit:
    """What a YOLO dataset split consists of, resolved from its ``data.yaml`` (or options)."""

    names: list[str]
    images: list[Path]
    image_dir: Path  # file names are given relative to it
    cat_ids: list[int]
    source: str


def resolve_split(root: str | Path, split: str, data_yaml: str | None = None,
                  names: Sequence[str] | dict[Any, str] | None = None) -> YoloSplit:
    """Find a split's images and class names (see ``YoloDataset`` for the rules)."""
    root = Path(root)
    yaml_path = root / (data_yaml or "data.yaml")
    if data_yaml is None and not yaml_path.is_file() and names is not None:
        image_dir = root / "images" / split
        if not image_dir.is_dir():
            raise DataError(f"YOLO dataset '{root}' (no data.yaml): image folder "
                            f"'{image_dir}' not found")
        images = _images_in(image_dir)
        where = f"YOLO dataset '{root}'"
        class_names = parse_names(names, f"{where} option")
        cat_ids = list(range(1, len(class_names) + 1))
    else:
        if data_yaml is None and not yaml_path.is_file():
            raise DataError(f"YOLO dataset '{root}': '{yaml_path}' not found (or give the "
                            "class names with the option 'names')")
        cfg = load_data_yaml(yaml_path)
        where = f"dataset file '{yaml_path}'"
        if names is not None:
            class_names = parse_names(names, f"{where} (option 'names')")
        else:
            if "names" not in cfg:
                raise DataError(f"{where} has no 'names'")
            class_names = parse_names(cfg["names"], where, cfg.get("nc"))
        base = dataset_base(cfg, yaml_path)
        splits = [k for k in ("train", "val", "test") if cfg.get(k)]
        if not cfg.get(split):
            raise DataError(f"{where} has no split '{split}' (it has: {', '.join(splits)})")
        images = split_images(cfg[split], base, f"{where} split '{split}'")
        entry = cfg[split]
        single = base / entry if isinstance(entry, str) else None
        image_dir = single if single is not None and single.is_dir() else base
        cat_ids = cfg.get("coco_category_ids")
        if cat_ids is None:
            cat_ids = list(range(1, len(class_names) + 1))
        elif not (isinstance(cat_ids, list) and len(cat_ids) == len(class_names)
                  and all(isinstance(i, int) for i in cat_ids) and len(set(cat_ids)) ==
                  len(cat_ids)):
            raise DataError(f"{where}: 'coco_category_ids' must list {len(class_names)} "
                            "distinct integer ids, one per name")
    if not images:
        raise DataError(f"{where}: no images for split '{split}'")
    return YoloSplit(class_names, images, image_dir, list(cat_ids), where)


@DATASETS.register("yolo")
class YoloDataset(ReaderDataset):
    """Ultralytics YOLO detection/segmentation labels::

        ROOT/data.yaml                    option data_yaml (relative to ROOT); keys: names (a
                                          list or {id: name}), optional nc and path, and one
                                          key per split (train/val/test): a folder, a .txt
                                          list of images or a list of those, relative to
                                          path (itself relative to the YAML's folder) or to
                                          the YAML's folder
        .../images/.../NAME.jpg           images (.bmp .jpeg .jpg .png .tif .tiff .webp)
        .../labels/.../NAME.txt           the last "images" path component -> "labels";
                                          one object per line: "cls cx cy w h" or
                                          "cls x1 y1 x2 y2 x3 y3 ...", normalised

    Without a data.yaml the option ``names`` (list or {id: name}) gives the classes and the
    images are ``ROOT/images/SPLIT/**``; with one, ``names`` overrides its names. An image
    without a label file (or with an empty one) has no objects. Polygon lines give instance
    masks; when masks are needed a box line is an error (there is no outline to use). Image
    ids are the file stems when all are distinct integers (COCO names), else 1..N;
    ``cat_ids`` is the YAML's ``coco_category_ids`` (written by ``coco_to_yolo``) or 1..N.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, data_yaml: str | None = None,
                 names: list[str] | dict[int, str] | None = None, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        info = resolve_split(self.root, split, data_yaml, names)
        self._source = info.source
        self.images = info.images
        self.image_dir = info.image_dir
        self.labels = [label_path(p) for p in self.images]
        self.image_ids = image_ids(self.images)
        self.cat_ids = info.cat_ids
        self._setup(["det"], det_classes=info.names, has_instances=True)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return f"YOLO {self._source} split '{self.split}'"

    def read(self, index: int) -> RawSample:
        img_path = self.images[index]
        image = read_image(img_path)
        h, w = image.shape[:2]
        try:
            file_name = img_path.relative_to(self.image_dir).as_posix()
        except ValueError:  # a .txt list may name images anywhere
            file_name = img_path.name
        raw = RawSample(image=image, image_id=self.image_ids[index], file_name=file_name)
        if not self.wants("det"):
            return raw
        label = self.labels[index]
        objects = (parse_label_file(label, len(self.det_classes), w, h) if label.is_file()
                   else [])
        raw.boxes = np.asarray([o.box for o in objects], np.float32).reshape(-1, 4)
        raw.labels = np.asarray([o.label for o in objects], np.int64).reshape(-1)
        if self._need_instances:
            masks = []
            for o in objects:
                if o.polygon is None:
                    raise DataError(f"label file '{label}' line {o.line}: a box, but instance "
                                    "masks need polygon lines")
                masks.append(polygons_to_mask([o.polygon], h, w))
            raw.instance_masks = (np.stack(masks) if masks
                                  else np.zeros((0, h, w), np.uint8))
        return raw
