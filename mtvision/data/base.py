"""What every dataset reader shares: task selection, derived labels, checks, transforms, skipping.

A reader (one per format, in ``mtvision.data.formats``) indexes its files in ``__init__``, calls
``self._setup(...)`` with its classes and the tasks it labels, and implements ``read(index)``
returning a ``RawSample``. Everything after that is here, so all formats give the same samples::

    {"image": uint8[3, H, W] (normalize_images on the device), "image_id": int, "file_name": str,
     "orig_size": (h, w), "targets": {task: target}}

plus ``"edge_gts"``: the annotators' full-resolution boundary maps, where the format has several,
and ``"orig_targets"`` (only when ``original_targets`` is set): the dense labels before the
letterbox, for scoring at the original size,

with only the tasks labelled for that image in ``targets`` (formats in
``mtvision.models.heads.base``; depth float[H, W] with 0 = invalid, normals float[3, H, W]).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mtvision.data import derive
from mtvision.data.io import DataError
from mtvision.data.sample import TASKS, RawSample
from mtvision.data.transforms import MASK_IGNORE, TransformResult, build_transforms

TransformFn = Callable[..., TransformResult]

DERIVE_EDGES = ("instances", "seg")


class ReaderDataset(Dataset, ABC):
    """Base class of the dataset readers.

    Common options (every reader accepts them):

    * ``tasks``: the subset of the tasks this dataset should feed (default: all it labels), e.g.
      only ``[det]`` from COCO when another dataset provides segmentation;
    * ``derive_seg``: a semantic map from the instance masks (class ``label + 1``, 0 =
      background, crowds ignored), with classes ``["background", *det_classes]``;
    * ``derive_edges``: an edge map from the ``"instances"`` (instance outlines, plus the
      semantic boundaries when there is a semantic map) or from the ``"seg"`` map,
      ``edge_thickness`` pixels wide (``mtvision.data.derive.edges_from_labels``);
    * ``derive_cls``: multi-label image classification from the objects present (every class
      with a box or a crowd region in the image), with classes ``det_classes``;
    * ``instance_masks``: also return each box's mask as ``targets["det"]["masks"]``;
    * ``skip_invalid``: a sample that cannot be read or fails the checks is replaced by the next
      valid one, with a warning, and counted in ``num_skipped`` (each DataLoader worker counts in
      its own copy); otherwise it raises ``DataError`` naming the file and the problem. With
      ``replace_invalid`` False (evaluation: nothing may be scored twice) the sample is ``None``
      instead, and ``collate`` leaves it out.
    """

    replace_invalid = True
    # Whether samples also carry "orig_targets" (want_original_targets): the seg, parts, depth
    # and normals labels at the original resolution, for scoring there.
    original_targets = False

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, tasks: Sequence[str] | None = None,
                 derive_seg: bool = False, derive_edges: str | None = None,
                 edge_thickness: int = 2, derive_cls: bool = False,
                 instance_masks: bool = False) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.skip_invalid = skip_invalid
        self.num_skipped = 0
        # In shared memory: set_epoch in the main process reaches the loader's persistent
        # workers, which hold their own copies of this dataset.
        self._aug_seed = torch.full((), -1, dtype=torch.int64).share_memory_()
        self.derive_seg = bool(derive_seg)
        if derive_edges not in (None, *DERIVE_EDGES):
            raise DataError(f"derive_edges must be one of {DERIVE_EDGES} or null, got "
                            f"{derive_edges!r}")
        self.derive_edges = derive_edges
        if int(edge_thickness) < 1:
            raise DataError(f"edge_thickness must be >= 1, got {edge_thickness}")
        self.edge_thickness = int(edge_thickness)
        self.instance_masks = bool(instance_masks)
        self.derive_cls = bool(derive_cls)
        self._requested = list(tasks) if tasks is not None else None
        self.det_classes: list[str] = []
        self.seg_classes: list[str] = []
        self.cls_classes: list[str] = []
        self.parts_classes: list[str] = []
        self.multi_label = False
        self.tasks: list[str] = []
        self._read_tasks: set[str] = set()
        self._need_instances = False
        self._default_transforms: dict[tuple[int, int], TransformFn] = {}

    # -- what subclasses provide ---------------------------------------------------------------

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples in the split."""

    @abstractmethod
    def read(self, index: int) -> RawSample:
        """The raw sample ``index``; raises ``DataError`` naming the file on any problem."""

    @property
    def source(self) -> str:
        """Where the data comes from, for messages."""
        return f"{type(self).__name__} '{self.root}' split '{self.split}'"

    def _setup(self, native: Sequence[str], det_classes: Sequence[str] = (),
               seg_classes: Sequence[str] = (), cls_classes: Sequence[str] = (),
               multi_label: bool = False, has_instances: bool = False,
               parts_classes: Sequence[str] = ()) -> None:
        """Record the classes and the tasks the files label; resolve derived and requested tasks.

        ``has_instances``: the format has instance masks (so ``derive_seg`` and
        ``derive_edges: instances`` are possible).
        """
        self.det_classes = list(det_classes)
        self.seg_classes = list(seg_classes)
        self.cls_classes = list(cls_classes)
        self.parts_classes = list(parts_classes)
        self.multi_label = bool(multi_label)
        available = set(native)
        if self.derive_seg:
            if not has_instances:
                raise DataError(f"{self.source}: derive_seg needs instance masks, which this "
                                "format does not have")
            if "seg" not in available:
                self.seg_classes = ["background", *self.det_classes]
            available.add("seg")
        if self.derive_edges == "instances" and not has_instances:
            raise DataError(f"{self.source}: derive_edges 'instances' needs instance masks, "
                            "which this format does not have")
        if self.derive_edges == "seg" and "seg" not in available:
            raise DataError(f"{self.source}: derive_edges 'seg' needs a semantic map (native or "
                            "derive_seg: true)")
        if self.derive_edges:
            available.add("edge")
        if self.derive_cls:
            if "det" not in available:
                raise DataError(f"{self.source}: derive_cls needs detection labels")
            if "cls" not in native:
                self.cls_classes = list(self.det_classes)
                self.multi_label = True
            available.add("cls")
        tasks = [t for t in TASKS if t in available]
        if self._requested is not None:
            unknown = [t for t in self._requested if t not in TASKS]
            if unknown:
                raise DataError(f"{self.source}: unknown tasks {unknown}; valid: "
                                f"{', '.join(TASKS)}")
            missing = [t for t in self._requested if t not in available]
            if missing:
                raise DataError(f"{self.source}: cannot feed tasks {missing}: it labels only "
                                f"{tasks} (derive_seg / derive_edges add seg and edge)")
            tasks = [t for t in tasks if t in self._requested]
        self.tasks = tasks
        # Labels to read: the tasks fed, plus what derivation needs.
        self._read_tasks = set(tasks)
        if "edge" in tasks and self.derive_edges == "seg":
            self._read_tasks.add("seg")
        if "cls" in tasks and self.derive_cls and "cls" not in native:
            self._read_tasks.add("det")
        # Instance masks are read when something needs them: derivation or the det target.
        self._need_instances = has_instances and (
            self.instance_masks or (self.derive_seg and "seg" not in native)
            or self.derive_edges == "instances")

    def wants(self, task: str) -> bool:
        """Whether ``read`` should load ``task``'s labels (fed, or needed to derive another)."""
        return task in self._read_tasks

    # -- shared behaviour ----------------------------------------------------------------------

    @property
    def num_classes(self) -> dict[str, int]:
        """Number of classes per task this dataset feeds (1 for edge, depth, normals, sal)."""
        n = {"det": len(self.det_classes), "seg": len(self.seg_classes),
             "cls": len(self.cls_classes), "parts": len(self.parts_classes)}
        return {t: n.get(t, 1) for t in self.tasks}

    def set_epoch(self, seed: int) -> None:
        """Make augmentations a function of (seed, sample index): the same in any worker,
        in any order, and after a resume."""
        if seed < 0:
            raise ValueError(f"the augmentation seed must be >= 0, got {seed}")
        self._aug_seed.fill_(seed)

    @property
    def aug_seed(self) -> int | None:
        """The seed of ``set_epoch`` (None before the first call: unseeded augmentations)."""
        seed = int(self._aug_seed)
        return None if seed < 0 else seed

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not self.skip_invalid:
            return self._load(index)
        if not self.replace_invalid:
            try:
                return self._load(index)
            except DataError as e:
                self.num_skipped += 1
                warnings.warn(f"skipping invalid sample {index}: {e}", stacklevel=2)
                return None
        n = len(self)
        for k in range(n):
            i = (index + k) % n
            try:
                return self._load(i)
            except DataError as e:
                self.num_skipped += 1
                warnings.warn(f"skipping invalid sample {i}: {e}", stacklevel=2)
        raise DataError(f"{self.source}: no valid sample ({n} images)")

    def _load(self, index: int) -> dict[str, Any]:
        raw = self.read(index)
        self._check(raw)
        self._derive(raw)
        h, w = raw.hw
        want = set(self.tasks)

        masks: dict[str, np.ndarray] = {}
        if "seg" in want and raw.seg is not None:
            masks["seg"] = raw.seg
        if "edge" in want and raw.edge is not None:
            masks["edge"] = raw.edge
        for task in ("parts", "sal"):
            if task in want and getattr(raw, task) is not None:
                masks[task] = getattr(raw, task)
        det = "det" in want and raw.boxes is not None
        boxes = np.zeros((0, 4), np.float32)
        labels = np.zeros((0,), np.int64)
        crowd = np.zeros((0,), bool)
        inst = None
        if det:
            n_crowd = 0 if raw.crowd_boxes is None else len(raw.crowd_boxes)
            boxes = np.concatenate([raw.boxes.reshape(-1, 4),
                                    np.zeros((0, 4)) if not n_crowd
                                    else raw.crowd_boxes.reshape(-1, 4)]).astype(np.float32)
            labels = np.concatenate([raw.labels.reshape(-1),
                                     np.zeros(0) if not n_crowd
                                     else raw.crowd_labels.reshape(-1)]).astype(np.int64)
            crowd = np.r_[np.zeros(len(raw.boxes), bool), np.ones(n_crowd, bool)]
            if self.instance_masks and raw.instance_masks is not None:
                crowd_masks = (np.zeros((0, h, w), np.uint8) if raw.crowd_masks is None
                               else raw.crowd_masks.astype(np.uint8))
                inst = np.concatenate([raw.instance_masks.astype(np.uint8), crowd_masks])

        transforms = self.transforms or self._default(h, w)
        if self.aug_seed is not None and hasattr(transforms, "reseed"):
            transforms.reseed(self.aug_seed * 1_000_003 + index)
        try:
            out = transforms(
                raw.image, boxes, labels, masks, crowd=crowd, instance_masks=inst,
                depth=raw.depth if "depth" in want else None,
                normals=raw.normals if "normals" in want else None)
        except ValueError as e:
            raise DataError(f"{self.source}: sample '{raw.file_name}': {e}") from None

        targets: dict[str, Any] = {}
        if det:
            keep = ~out.crowd
            target = {"boxes": torch.from_numpy(out.boxes[keep].astype(np.float32)),
                      "labels": torch.from_numpy(out.labels[keep].astype(np.int64))}
            if out.crowd.any():
                target["crowd_boxes"] = torch.from_numpy(out.boxes[~keep].astype(np.float32))
                target["crowd_labels"] = torch.from_numpy(out.labels[~keep].astype(np.int64))
            if out.instance_masks is not None:
                target["masks"] = torch.from_numpy(out.instance_masks[keep])
                if out.crowd.any():
                    target["crowd_masks"] = torch.from_numpy(out.instance_masks[~keep])
            targets["det"] = target
        for task in ("seg", "edge", "parts", "sal"):
            if task in out.masks:
                targets[task] = torch.from_numpy(out.masks[task].astype(np.int64))
        if "cls" in want and raw.cls is not None:
            targets["cls"] = self._cls_target(raw.cls)
        if out.depth is not None:
            targets["depth"] = torch.from_numpy(out.depth)
        if out.normals is not None:
            targets["normals"] = torch.from_numpy(np.ascontiguousarray(
                out.normals.transpose(2, 0, 1)))
        sample = {"image": out.image, "image_id": int(raw.image_id), "file_name": raw.file_name,
                  "orig_size": (h, w), "targets": targets}
        if "edge" in want and raw.edge_annotators is not None:
            sample["edge_gts"] = raw.edge_annotators
        if self.original_targets:
            sample["orig_targets"] = self._original_targets(raw, want)
        return sample

    @staticmethod
    def _original_targets(raw: RawSample, want: set[str]) -> dict[str, torch.Tensor]:
        """The dense labels as read, before the letterbox: seg / parts long[H, W], depth
        float[H, W], normals float[3, H, W] (the layouts of the letterboxed targets)."""
        out: dict[str, torch.Tensor] = {}
        for task in ("seg", "parts"):
            if task in want and getattr(raw, task) is not None:
                out[task] = torch.from_numpy(getattr(raw, task).astype(np.int64))
        if "depth" in want and raw.depth is not None:
            out["depth"] = torch.from_numpy(np.asarray(raw.depth, np.float32).copy())
        if "normals" in want and raw.normals is not None:
            out["normals"] = torch.from_numpy(np.ascontiguousarray(
                np.asarray(raw.normals, np.float32).transpose(2, 0, 1)))
        return out

    def _default(self, h: int, w: int) -> TransformFn:
        if (h, w) not in self._default_transforms:
            self._default_transforms[(h, w)] = build_transforms(None, (h, w), train=False)
        return self._default_transforms[(h, w)]

    def _fail(self, raw: RawSample, problem: str) -> DataError:
        return DataError(f"{self.source}: sample '{raw.file_name}': {problem}")

    def _check(self, raw: RawSample) -> None:
        """Shapes agree with the image and every label is in range (one clear error if not)."""
        h, w = raw.hw
        if raw.image.ndim != 3 or raw.image.shape[2] != 3 or raw.image.dtype != np.uint8:
            raise self._fail(raw, f"image must be HxWx3 uint8, got {raw.image.shape} "
                             f"{raw.image.dtype}")
        for name in ("seg", "edge", "depth", "parts", "sal"):
            m = getattr(raw, name)
            if m is not None and m.shape[:2] != (h, w):
                raise self._fail(raw, f"{name} map is {m.shape[1]}x{m.shape[0]}, image is "
                                 f"{w}x{h}")
        if raw.normals is not None and raw.normals.shape != (h, w, 3):
            raise self._fail(raw, f"normals are {raw.normals.shape}, expected {(h, w, 3)}")
        if raw.boxes is not None:
            n_det = len(self.det_classes)
            for lab, what in ((raw.labels, "box"), (raw.crowd_labels, "crowd box")):
                bad = None if lab is None else lab[(lab < 0) | (lab >= n_det)]
                if bad is not None and bad.size:
                    raise self._fail(raw, f"{what} label {int(bad[0])} out of range "
                                     f"0..{n_det - 1}")
            if raw.labels is None or len(raw.labels) != len(raw.boxes):
                raise self._fail(raw, "boxes and labels differ in number")
            if raw.boxes.size and not np.isfinite(raw.boxes).all():
                raise self._fail(raw, "a box has a non-finite coordinate")
        if raw.seg is not None and self.seg_classes:
            bad = (raw.seg >= len(self.seg_classes)) & (raw.seg != MASK_IGNORE)
            if bad.any():
                raise self._fail(raw, f"seg class id {int(raw.seg[bad].max())} out of range "
                                 f"0..{len(self.seg_classes) - 1} (or {MASK_IGNORE} = ignore)")
        for name in ("edge", "sal"):
            m = getattr(raw, name)
            bad = None if m is None else ~np.isin(m, (0, 1, MASK_IGNORE))
            if bad is not None and bad.any():
                raise self._fail(raw, f"{name} map value {int(m[bad].max())}; expected 0, 1 "
                                 f"or {MASK_IGNORE}")
        if raw.parts is not None and self.parts_classes:
            bad = (raw.parts >= len(self.parts_classes)) & (raw.parts != MASK_IGNORE)
            if bad.any():
                raise self._fail(raw, f"parts class id {int(raw.parts[bad].max())} out of range "
                                 f"0..{len(self.parts_classes) - 1} (or {MASK_IGNORE} = ignore)")
        if raw.cls is not None:
            n = len(self.cls_classes)
            values = raw.cls if isinstance(raw.cls, (list, tuple)) else [raw.cls]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
                    raise self._fail(raw, f"cls label {v!r} out of range 0..{n - 1}")
            if not self.multi_label and len(values) != 1:
                raise self._fail(raw, f"{len(values)} cls labels but the dataset is single-label")
        if raw.depth is not None and not np.isfinite(raw.depth).all():
            raise self._fail(raw, "depth has non-finite values (use 0 for invalid pixels)")

    def _derive(self, raw: RawSample) -> None:
        hw = raw.hw
        if self.derive_cls and raw.cls is None and raw.boxes is not None:
            present = set(raw.labels.tolist())
            if raw.crowd_labels is not None:
                present |= set(raw.crowd_labels.tolist())
            raw.cls = sorted(int(v) for v in present)
        if self.derive_seg and raw.seg is None and raw.instance_masks is not None:
            raw.seg = derive.semantic_from_instances(raw.instance_masks, raw.labels, hw,
                                                     raw.crowd_masks)
        if self.derive_edges and raw.edge is None:
            if self.derive_edges == "instances" and raw.instance_masks is not None:
                masks = raw.instance_masks
                if raw.crowd_masks is not None and len(raw.crowd_masks):
                    masks = np.concatenate([masks, raw.crowd_masks])
                raw.edge = derive.edges_from_instances(masks, hw, self.edge_thickness,
                                                       semantic=raw.seg)
            elif self.derive_edges == "seg" and raw.seg is not None:
                raw.edge = derive.edges_from_labels(raw.seg, self.edge_thickness)

    def _cls_target(self, value: int | list[int]) -> torch.Tensor:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if self.multi_label:
            target = torch.zeros(len(self.cls_classes), dtype=torch.float32)
            target[[int(v) for v in values]] = 1.0
            return target
        return torch.tensor(int(values[0]), dtype=torch.int64)
