"""Cityscapes (Cordts et al., CVPR 2016), fine annotations: 19-class semantic segmentation and
instances of the 8 "thing" classes, read from the official ``gtFine`` PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image, read_label_map, read_mask
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int  # 255: not trained or evaluated
    category: str
    has_instances: bool
    ignore_in_eval: bool


# The label definition of the public cityscapesScripts (helpers/labels.py), without colours.
# The license plate has id -1 and train id -1 there; here its train id is 255 (ignore) too.
LABELS = (
    CityscapesLabel("unlabeled", 0, 255, "void", False, True),
    CityscapesLabel("ego vehicle", 1, 255, "void", False, True),
    CityscapesLabel("rectification border", 2, 255, "void", False, True),
    CityscapesLabel("out of roi", 3, 255, "void", False, True),
    CityscapesLabel("static", 4, 255, "void", False, True),
    CityscapesLabel("dynamic", 5, 255, "void", False, True),
    CityscapesLabel("ground", 6, 255, "void", False, True),
    CityscapesLabel("road", 7, 0, "flat", False, False),
    CityscapesLabel("sidewalk", 8, 1, "flat", False, False),
    CityscapesLabel("parking", 9, 255, "flat", False, True),
    CityscapesLabel("rail track", 10, 255, "flat", False, True),
    CityscapesLabel("building", 11, 2, "construction", False, False),
    CityscapesLabel("wall", 12, 3, "construction", False, False),
    CityscapesLabel("fence", 13, 4, "construction", False, False),
    CityscapesLabel("guard rail", 14, 255, "construction", False, True),
    CityscapesLabel("bridge", 15, 255, "construction", False, True),
    CityscapesLabel("tunnel", 16, 255, "construction", False, True),
    CityscapesLabel("pole", 17, 5, "object", False, False),
    CityscapesLabel("polegroup", 18, 255, "object", False, True),
    CityscapesLabel("traffic light", 19, 6, "object", False, False),
    CityscapesLabel("traffic sign", 20, 7, "object", False, False),
    CityscapesLabel("vegetation", 21, 8, "nature", False, False),
    CityscapesLabel("terrain", 22, 9, "nature", False, False),
    CityscapesLabel("sky", 23, 10, "sky", False, False),
    CityscapesLabel("person", 24, 11, "human", True, False),
    CityscapesLabel("rider", 25, 12, "human", True, False),
    CityscapesLabel("car", 26, 13, "vehicle", True, False),
    CityscapesLabel("truck", 27, 14, "vehicle", True, False),
    CityscapesLabel("bus", 28, 15, "vehicle", True, False),
    CityscapesLabel("caravan", 29, 255, "vehicle", True, True),
    CityscapesLabel("trailer", 30, 255, "vehicle", True, True),
    CityscapesLabel("train", 31, 16, "vehicle", True, False),
    CityscapesLabel("motorcycle", 32, 17, "vehicle", True, False),
    CityscapesLabel("bicycle", 33, 18, "vehicle", True, False),
    CityscapesLabel("license plate", -1, 255, "vehicle", False, True),
)

# The 19 evaluated classes, index = train id.
SEG_CLASSES = tuple(lab.name for lab in sorted((x for x in LABELS if x.train_id != 255),
                                               key=lambda x: x.train_id))
# Instance classes that are evaluated (caravan and trailer are not): the detection classes.
THING_CLASSES = tuple(lab.name for lab in LABELS if lab.has_instances and not lab.ignore_in_eval)
THING_LABEL = {lab.id: THING_CLASSES.index(lab.name) for lab in LABELS
               if lab.name in THING_CLASSES}  # label id -> contiguous det label
INSTANCE_IDS = frozenset(lab.id for lab in LABELS if lab.has_instances)

# labelIds -> train ids; -1 marks values that are no label id. A uint8 PNG would store the
# license plate's -1 as 255, so 255 maps to ignore too.
ID_TO_TRAIN = np.full(256, -1, np.int16)
for _lab in LABELS:
    ID_TO_TRAIN[_lab.id % 256] = _lab.train_id

MAX_LABEL_ID = max(lab.id for lab in LABELS)
LABEL_SUFFIXES = ("labelIds", "labelTrainIds")
IMAGE_SUFFIX = "_leftImg8bit.png"


def label_ids_to_train_ids(label_ids: np.ndarray, path: str | Path) -> np.ndarray:
    """uint8 train-id map (255 = ignore) of a labelIds map; an unknown id is a ``DataError``."""
    out = ID_TO_TRAIN[np.asarray(label_ids, np.uint8)]
    if (out < 0).any():
        bad = int(np.asarray(label_ids)[out < 0].max())
        raise DataError(f"Cityscapes labels '{path}' have id {bad}, not a Cityscapes label id "
                        f"(0..{MAX_LABEL_ID})")
    return out.astype(np.uint8)


def read_id_png(path: str | Path) -> np.ndarray:
    """An ``H x W`` int32 map from an 8- or 16-bit single-channel PNG (instanceIds)."""
    return read_label_map(path, "instance map").astype(np.int32)


class Instances(NamedTuple):
    """Objects of one instanceIds map; masks are ``None`` unless asked for."""

    boxes: np.ndarray  # float32[K, 4] xyxy pixel corners
    labels: np.ndarray  # int64[K] index into THING_CLASSES
    masks: np.ndarray | None  # uint8[K, H, W]
    crowd_boxes: np.ndarray
    crowd_labels: np.ndarray
    crowd_masks: np.ndarray | None


def instances_from_ids(ids: np.ndarray, path: str | Path, with_masks: bool) -> Instances:
    """Instances and crowd groups of an instanceIds map.

    A value ``v >= 1000`` is instance ``v % 1000`` of label ``v // 1000``; a value below 1000 is
    a plain label id, which for an instance class marks a group of objects labelled together
    (a crowd). Only the 8 evaluated thing classes count; caravan and trailer are skipped.
    Objects are listed in increasing value.
    """
    ids = np.asarray(ids, np.int32)
    hw = ids.shape
    # find_objects gives every value's bounding slices in one pass over the map.
    slices = ndimage.find_objects(ids) if ids.size else []
    found: dict[bool, list[tuple[list[float], int, np.ndarray | None]]] = {False: [], True: []}
    for v, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        lab_id = v // 1000 if v >= 1000 else v
        if v >= 1000 and lab_id not in INSTANCE_IDS:
            raise DataError(f"Cityscapes instance map '{path}' has value {v}: label {lab_id} "
                            "has no instances")
        if v < 1000 and v > MAX_LABEL_ID:
            raise DataError(f"Cityscapes instance map '{path}' has value {v}, not a label id "
                            f"(0..{MAX_LABEL_ID}) or an instance id (>= 1000)")
        if lab_id not in THING_LABEL:
            continue
        ys, xs = sl
        box = [float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)]
        mask = None
        if with_masks:
            mask = np.zeros(hw, np.uint8)
            mask[sl] = ids[sl] == v
        found[v < 1000].append((box, THING_LABEL[lab_id], mask))

    def pack(items: list[tuple[list[float], int, np.ndarray | None]]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes = np.asarray([b for b, _, _ in items], np.float32).reshape(-1, 4)
        labels = np.asarray([lab for _, lab, _ in items], np.int64)
        masks = None
        if with_masks:
            masks = (np.stack([m for _, _, m in items]) if items
                     else np.zeros((0, *hw), np.uint8))
        return boxes, labels, masks

    return Instances(*pack(found[False]), *pack(found[True]))


class CityscapesFrame(NamedTuple):
    city: str
    stem: str  # CITY_SEQ_FRAME
    image: Path
    labels: Path | None  # the semantic PNG (labelIds or labelTrainIds), None if absent
    train_ids: bool  # labels holds train ids already
    instances: Path | None


@DATASETS.register("cityscapes")
class CityscapesDataset(ReaderDataset):
    """Cityscapes fine annotations, splits ``train``, ``val`` (and ``test``, unlabelled)::

        ROOT/
          leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png          RGB frames
          gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png           uint8 label ids 0..33
          gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png      or uint8 train ids 0..18,
                                                                         255 = ignore
          gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_instanceIds.png        16-bit: label id * 1000
                                                                         + instance number, or
                                                                         the label id alone

    ``seg``: the label ids mapped to the 19 train ids of ``LABELS`` (``SEG_CLASSES``), all other
    labels 255 (ignore). ``det``: from instanceIds, each value ``v >= 1000`` of the 8 evaluated
    thing classes (``THING_CLASSES``) is an instance (box = bounds of its pixels); a value below
    1000 that is a thing class id is a group, returned as a crowd box / crowd mask. Caravan and
    trailer (instances, but not evaluated) are neither boxes nor crowds.

    ``label_suffix``: ``"labelIds"``, ``"labelTrainIds"`` or ``None`` (default: labelIds, and
    labelTrainIds for a frame without labelIds, e.g. a set converted by cityscapesScripts); an
    explicit suffix must be there for every frame.
    ``seg`` is labelled when every frame has its semantic PNG, ``det`` when every frame has its
    instanceIds; a folder where only some frames have them is an error. ``image_id`` is the
    1-based position in the sorted frame list (cities, then names).
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, label_suffix: str | None = None,
                 **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        if label_suffix is not None and label_suffix not in LABEL_SUFFIXES:
            raise DataError(f"Cityscapes label_suffix must be one of {LABEL_SUFFIXES} or null, "
                            f"got {label_suffix!r}")
        self.label_suffix = label_suffix
        self.image_dir = self.root / "leftImg8bit" / split
        self.gt_dir = self.root / "gtFine" / split
        for d in (self.image_dir, self.gt_dir):
            if not d.is_dir():
                raise DataError(f"Cityscapes split '{split}': folder '{d}' not found")
        self.frames = self._index()
        native = []
        for task, attr in (("seg", "labels"), ("det", "instances")):
            missing = [f for f in self.frames if getattr(f, attr) is None]
            if len(missing) == len(self.frames):
                continue
            if missing:
                f = missing[0]
                what = ("instanceIds" if task == "det"
                        else f"{label_suffix or 'labelIds or labelTrainIds'}")
                raise DataError(f"Cityscapes frame '{f.image}' has no gtFine {what} PNG in "
                                f"'{self.gt_dir / f.city}' ({len(missing)} of "
                                f"{len(self.frames)} frames lack one)")
            native.append(task)
        if label_suffix is not None and "seg" not in native:
            raise DataError(f"Cityscapes split '{split}': no '*_gtFine_{label_suffix}.png' in the "
                            f"city folders of '{self.gt_dir}'")
        if not native:
            raise DataError(f"Cityscapes split '{split}': no gtFine label PNGs in '{self.gt_dir}'")
        self._setup(native, det_classes=THING_CLASSES, seg_classes=SEG_CLASSES,
                    has_instances="det" in native)

    def _index(self) -> list[CityscapesFrame]:
        frames = []
        for city_dir in sorted(p for p in self.image_dir.iterdir() if p.is_dir()):
            city = city_dir.name
            gt_city = self.gt_dir / city
            for img in sorted(city_dir.glob(f"*{IMAGE_SUFFIX}")):
                stem = img.name[: -len(IMAGE_SUFFIX)]
                labels, train_ids = None, False
                for suffix in ([self.label_suffix] if self.label_suffix else LABEL_SUFFIXES):
                    cand = gt_city / f"{stem}_gtFine_{suffix}.png"
                    if cand.is_file():
                        labels, train_ids = cand, suffix == "labelTrainIds"
                        break
                inst = gt_city / f"{stem}_gtFine_instanceIds.png"
                frames.append(CityscapesFrame(city, stem, img, labels, train_ids,
                                              inst if inst.is_file() else None))
        if not frames:
            raise DataError(f"Cityscapes split '{self.split}': no '*{IMAGE_SUFFIX}' frames in "
                            f"the city folders of '{self.image_dir}'")
        return frames

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def source(self) -> str:
        return f"Cityscapes '{self.root}' split '{self.split}'"

    def semantic(self, index: int) -> np.ndarray:
        """The frame's uint8 train-id map (255 = ignore)."""
        f = self.frames[index]
        if f.labels is None:
            raise DataError(f"Cityscapes frame '{f.image}' has no semantic label PNG")
        m = read_mask(f.labels)
        return m if f.train_ids else label_ids_to_train_ids(m, f.labels)

    def instances(self, index: int, with_masks: bool) -> Instances:
        """The frame's thing instances and crowd groups (``instances_from_ids``)."""
        f = self.frames[index]
        if f.instances is None:
            raise DataError(f"Cityscapes frame '{f.image}' has no instanceIds PNG")
        return instances_from_ids(read_id_png(f.instances), f.instances, with_masks)

    def read(self, index: int) -> RawSample:
        f = self.frames[index]
        image = read_image(f.image)
        h, w = image.shape[:2]
        raw = RawSample(image=image, image_id=index + 1, file_name=f"{f.city}/{f.image.name}")
        # The seg map also feeds derived edges when "seg" itself is not requested.
        if f.labels is not None and ("seg" in self.tasks or self.derive_edges is not None):
            raw.seg = self.semantic(index)
        if f.instances is not None and ("det" in self.tasks or self._need_instances):
            ids = read_id_png(f.instances)
            if ids.shape != (h, w):
                raise DataError(f"Cityscapes instance map '{f.instances}' is {ids.shape[1]}x"
                                f"{ids.shape[0]}, its frame is {w}x{h}")
            inst = instances_from_ids(ids, f.instances, self._need_instances)
            raw.boxes, raw.labels = inst.boxes, inst.labels
            raw.crowd_boxes, raw.crowd_labels = inst.crowd_boxes, inst.crowd_labels
            if self._need_instances:
                raw.instance_masks, raw.crowd_masks = inst.masks, inst.crowd_masks
        return raw
