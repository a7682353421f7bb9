"""NYUD-v2 for dense multi-task learning in the layout of ASTMT / the Multi-Task-Learning-PyTorch
code base (``NYUD_MT``) and of ATRC / InvPT (``NYUDv2``): 795 train / 654 val images of
425x560 with 40-class semantic segmentation, depth, surface normals and edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.formats.nyuv2 import _load as load_npy
from mtvision.data.formats.pascal_mt import read_split_list
from mtvision.data.io import DataError, read_image, read_label_map
from mtvision.data.sample import RawSample
from mtvision.data.transforms import MASK_IGNORE
from mtvision.registry import DATASETS

# The 40 classes of Gupta et al. (CVPR 2013), in label order 1..40 (0 = unlabelled).
NYUD40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop")

# Task -> folder, and the file types each may come in (the first one present per image wins).
TASK_DIRS = {"seg": "segmentation", "edge": "edge", "depth": "depth", "normals": "normals"}
TASK_EXTS = {"seg": (".png",), "edge": (".npy", ".png"), "depth": (".npy",),
             "normals": (".npy", ".png")}
IMAGE_EXTS = (".jpg", ".png")

# A decoded normals PNG is a unit vector up to 8-bit quantisation (|n| within ~1 %); pixels far
# from unit length (a black or grey fill) encode no normal and are marked invalid.
_UNIT_TOL = 0.1
_TOL = 1e-3


def _first_existing(folder: Path, name: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        p = folder / f"{name}{ext}"
        if p.is_file():
            return p
    return None


@DATASETS.register("nyud_mt")
class NYUDMTDataset(ReaderDataset):
    """NYUD-v2 multi-task, one sample per image of ``gt_sets/SPLIT.txt``::

        ROOT/                           (NYUD_MT/ or NYUDv2/)
          gt_sets/{train,val}.txt       the splits, one name per line
          images/NAME.jpg|.png          RGB images
          segmentation/NAME.png         seg: 8-bit labels 0..40; 0 (unlabelled) is ignored and
                                        label k is class k - 1 of NYUD40_CLASSES
          depth/NAME.npy                depth: HxW (or HxWx1) float metres, 0 = invalid
          normals/NAME.npy | .png       normals: HxWx3 float in [-1, 1] (zero vector = invalid),
                                        or an RGB PNG with n = 2 v / 255 - 1 (ATRC's files)
          edge/NAME.npy | .png          edge: HxW 0/1 float (.npy) or 0/255 (.png)

    A task is labelled when its folder exists, and then every image of the split needs its file
    there. The edge map is also kept at full resolution as the one annotator of the BSDS
    protocol (evaluated with ``eval.edge_max_dist: 0.011``). PNG normals are renormalised to
    unit length; pixels whose decoded vector is not within 10 % of unit length (black or grey
    fill) are invalid. ``image_id`` is
    the name when numeric, else the position in the list.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            raise DataError(f"NYUD-v2 MT '{self.root}': folder '{image_dir}' not found")
        self.list_file = self.root / "gt_sets" / f"{split}.txt"
        self.names = read_split_list(self.list_file, "NYUD-v2")
        self.images = []
        for name in self.names:
            p = _first_existing(image_dir, name, IMAGE_EXTS)
            if p is None:
                raise DataError(f"NYUD-v2 image '{image_dir / name}.jpg' (or .png) not found "
                                f"(listed in '{self.list_file}')")
            self.images.append(p)
        self.files: dict[str, list[Path]] = {}
        for task, sub in TASK_DIRS.items():
            folder = self.root / sub
            if not folder.is_dir():
                continue
            paths = [_first_existing(folder, n, TASK_EXTS[task]) for n in self.names]
            missing = [n for n, p in zip(self.names, paths, strict=True) if p is None]
            if missing:
                raise DataError(f"NYUD-v2 '{folder / missing[0]}{TASK_EXTS[task][0]}' not found "
                                f"({len(missing)} of {len(self.names)} images of split "
                                f"'{split}' lack a {task} file)")
            self.files[task] = paths  # type: ignore[assignment]
        numeric = all(n.isdigit() for n in self.names)
        self.image_ids = [int(n) if numeric else i for i, n in enumerate(self.names)]
        self._setup(list(self.files), seg_classes=NYUD40_CLASSES)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def source(self) -> str:
        return f"NYUD-v2 MT '{self.root}' split '{self.split}'"

    def read(self, index: int) -> RawSample:
        img_path = self.images[index]
        image = read_image(img_path)
        hw = image.shape[:2]
        raw = RawSample(image=image, image_id=self.image_ids[index], file_name=img_path.name)
        if self.wants("seg") or (self.derive_edges == "seg" and "edge" in self.tasks):
            raw.seg = self._seg(self.files["seg"][index], hw)
        if self.wants("edge") and self.derive_edges is None:
            edge = self._edge(self.files["edge"][index], hw)
            raw.edge = edge.astype(np.uint8)
            raw.edge_annotators = [edge]
        if self.wants("depth"):
            raw.depth = self._depth(self.files["depth"][index], hw)
        if self.wants("normals"):
            raw.normals = self._normals(self.files["normals"][index], hw)
        return raw

    @staticmethod
    def _hw(a: np.ndarray, path: Path, what: str, hw: tuple[int, int]) -> np.ndarray:
        """``a`` as HxW (a trailing channel of 1 dropped), with the image's size."""
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim != 2:
            raise DataError(f"{what} '{path}' has shape {a.shape}, expected HxW")
        if a.shape != tuple(hw):
            raise DataError(f"{what} '{path}' is {a.shape[1]}x{a.shape[0]}, its image is "
                            f"{hw[1]}x{hw[0]}")
        return a

    def _seg(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        labels = self._hw(read_label_map(path, "segmentation"), path, "segmentation", hw)
        if labels.max() > len(NYUD40_CLASSES):
            raise DataError(f"segmentation '{path}' has label {int(labels.max())}, expected "
                            f"0..{len(NYUD40_CLASSES)} (0 = unlabelled)")
        seg = labels.astype(np.int16) - 1
        return np.where(seg < 0, MASK_IGNORE, seg).astype(np.uint8)

    def _edge(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        if path.suffix == ".png":
            m = self._hw(read_label_map(path, "edge map"), path, "edge map", hw)
            return m.astype(np.float64) / np.iinfo(m.dtype).max > 0.5
        a = self._hw(load_npy(path), path, "edge map", hw)
        if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
            raise DataError(f"edge map '{path}' must hold 0 and 1 only")
        return a != 0

    def _depth(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        a = self._hw(load_npy(path), path, "depth", hw)
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"depth '{path}' has non-numeric or non-finite values (use 0 for "
                            "invalid pixels)")
        if (a < 0).any():
            raise DataError(f"depth '{path}' has negative values (min {a.min():g})")
        return np.ascontiguousarray(a, dtype=np.float32)

    def _normals(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        if path.suffix == ".png":
            rgb = read_image(path)
            if rgb.shape[:2] != tuple(hw):
                raise DataError(f"normals '{path}' are {rgb.shape[1]}x{rgb.shape[0]}, its image "
                                f"is {hw[1]}x{hw[0]}")
            n = 2.0 * rgb.astype(np.float32) / 255.0 - 1.0
            norm = np.linalg.norm(n, axis=2, keepdims=True)
            ok = np.abs(norm - 1.0) <= _UNIT_TOL
            return np.where(ok, n / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
        a = load_npy(path)
        if a.shape != (*hw, 3):
            raise DataError(f"normals '{path}' have shape {a.shape}, expected {(*hw, 3)} (the "
                            "image's size)")
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"normals '{path}' have non-numeric or non-finite values")
        if np.abs(a).max() > 1 + _TOL:
            raise DataError(f"normals '{path}' have components outside [-1, 1] (max |v| "
                            f"{np.abs(a).max():g})")
        return np.ascontiguousarray(np.clip(a, -1.0, 1.0), dtype=np.float32)
