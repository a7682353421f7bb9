"""The preprocessed .npy form of MTAN (Liu et al., CVPR 2019) and LibMTL: NYUv2 (13-class
segmentation, depth and surface normals at 288x384) and Cityscapes (7- or 19-class segmentation
and depth at 128x256)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError
from mtvision.data.sample import RawSample
from mtvision.data.transforms import MASK_IGNORE
from mtvision.registry import DATASETS

NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "painting",
                 "sofa", "table", "tv", "wall", "window")
# MTAN's Cityscapes labels: the 7 categories of the official label table, or its 19 train ids.
CITYSCAPES_7_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_19_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole",
                         "traffic light", "traffic sign", "vegetation", "terrain", "sky",
                         "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                         "bicycle")

# Task -> sub-folder holding its labels.
TASK_DIRS = {"seg": "label", "depth": "depth", "normals": "normal"}

# Float images and normals come out of float computations: allow rounding error just outside the
# documented ranges, but not another convention (0..255 images, unnormalised normals).
_TOL = 1e-3


def _load(path: Path) -> np.ndarray:
    try:
        # No pickles: a data file must not be able to run code.
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"cannot read '{path}': file not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read '{path}': not a readable .npy array ({e})") from None


def _sort_key(stem: str) -> tuple[int, int | str]:
    # Numeric names in numeric order (0, 1, 2, ..., 10), any others after them by name.
    return (0, int(stem)) if stem.isdigit() else (1, stem)


@DATASETS.register("nyuv2")
class NYUv2Dataset(ReaderDataset):
    """NYUv2 (MTAN / LibMTL preprocessing), splits ``train`` and ``val`` (MTAN's test set)::

        ROOT/SPLIT/
          image/I.npy      float32 HxWx3 RGB in [0, 1] (uint8 0..255 also accepted)
          label/I.npy      HxW (or HxWx1) float class ids 0..12 (NYUV2_CLASSES), -1 = ignore
          depth/I.npy      HxW or HxWx1 float metres, 0 = invalid
          normal/I.npy     HxWx3 float in [-1, 1], zero vector = invalid

    ``I`` are the sample names (usually 0, 1, 2, ...; listed in numeric order). Each of
    ``label``, ``depth`` and ``normal`` is optional: the tasks ``seg``, ``depth`` and ``normals``
    are labelled when its folder exists, and then every image needs its file there.
    The image becomes uint8 RGB; label -1 becomes 255; ``image_id`` is ``I`` when numeric.
    """

    name = "NYUv2"
    classes: tuple[str, ...] = NYUV2_CLASSES
    task_dirs = TASK_DIRS

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.split_dir = self.root / split
        image_dir = self.split_dir / "image"
        if not image_dir.is_dir():
            raise DataError(f"{self.name} split '{split}': folder '{image_dir}' not found")
        self.names = sorted((p.stem for p in image_dir.glob("*.npy")), key=_sort_key)
        if not self.names:
            raise DataError(f"{self.name} split '{split}': no .npy files in '{image_dir}'")
        native = []
        for task, sub in self.task_dirs.items():
            d = self.split_dir / sub
            if not d.is_dir():
                continue
            have = {p.stem for p in d.glob("*.npy")}
            missing = [n for n in self.names if n not in have]
            if missing:
                raise DataError(f"{self.name} split '{split}': '{d / (missing[0] + '.npy')}' "
                                f"not found "
                                f"({len(missing)} of {len(self.names)} images lack a "
                                f"'{sub}' file)")
            native.append(task)
        numeric = all(n.isdigit() for n in self.names)
        self._ids = [int(n) if numeric else i for i, n in enumerate(self.names)]
        self._setup(native, seg_classes=self.classes)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def source(self) -> str:
        return f"{self.name} '{self.split_dir}'"

    def _path(self, sub: str, index: int) -> Path:
        return self.split_dir / sub / f"{self.names[index]}.npy"

    def read(self, index: int) -> RawSample:
        image = self._image(self._path("image", index))
        hw = image.shape[:2]
        raw = RawSample(image=image, image_id=self._ids[index],
                        file_name=f"{self.names[index]}.npy")
        # The map is also needed when the edge target is derived from it (tasks: [edge]).
        if "seg" in self.tasks or (self.derive_edges == "seg" and "edge" in self.tasks):
            raw.seg = self._label(self._path(self.task_dirs["seg"], index), hw)
        if "depth" in self.tasks:
            raw.depth = self._depth(self._path(self.task_dirs["depth"], index), hw)
        if "normals" in self.tasks:
            raw.normals = self._normals(self._path(self.task_dirs["normals"], index), hw)
        return raw

    @staticmethod
    def _image(path: Path) -> np.ndarray:
        a = _load(path)
        if a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
            raise DataError(f"image '{path}' has shape {a.shape}, expected HxWx3")
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"image '{path}' has dtype {a.dtype}, expected float in [0, 1]")
        if not np.isfinite(a).all() or a.min() < -_TOL or a.max() > 1 + _TOL:
            raise DataError(f"image '{path}' has values outside [0, 1] (range "
                            f"{np.nanmin(a):g}..{np.nanmax(a):g})")
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)

    @staticmethod
    def _hw_of(a: np.ndarray, path: Path, what: str, hw: tuple[int, int]) -> np.ndarray:
        """``a`` as HxW (a trailing channel of 1 dropped), with the image's size."""
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim != 2:
            raise DataError(f"{what} '{path}' has shape {a.shape}, expected HxW or HxWx1")
        if a.shape != tuple(hw):
            raise DataError(f"{what} '{path}' is {a.shape[1]}x{a.shape[0]}, its image is "
                            f"{hw[1]}x{hw[0]}")
        return a

    def _label(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        a = self._hw_of(_load(path), path, "label", hw)
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"label '{path}' has non-numeric or non-finite values")
        n = len(self.classes)
        bad = (a != np.round(a)) | (a < -1) | (a >= n)
        if bad.any():
            raise DataError(f"label '{path}' has class id {a[bad].flat[0]:g} out of range "
                            f"0..{n - 1} (or -1 = ignore)")
        seg = a.astype(np.int16)
        return np.where(seg < 0, MASK_IGNORE, seg).astype(np.uint8)

    def _depth(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        a = self._hw_of(_load(path), path, "depth", hw)
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"depth '{path}' has non-numeric or non-finite values "
                            "(use 0 for invalid pixels)")
        if (a < 0).any():
            raise DataError(f"depth '{path}' has negative values (min {a.min():g})")
        return np.ascontiguousarray(a, dtype=np.float32)

    @staticmethod
    def _normals(path: Path, hw: tuple[int, int]) -> np.ndarray:
        a = _load(path)
        if a.shape != (*hw, 3):
            raise DataError(f"normals '{path}' have shape {a.shape}, expected "
                            f"{(*hw, 3)} (the image's size)")
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"normals '{path}' have non-numeric or non-finite values")
        if np.abs(a).max() > 1 + _TOL:
            raise DataError(f"normals '{path}' have components outside [-1, 1] "
                            f"(max |v| {np.abs(a).max():g})")
        return np.ascontiguousarray(a, dtype=np.float32)


@DATASETS.register("cityscapes_mtan")
class CityscapesMTANDataset(NYUv2Dataset):
    """Cityscapes in MTAN's preprocessed .npy form (segmentation + depth at 128x256)::

        ROOT/SPLIT/                    splits ``train`` and ``val``
          image/I.npy                  float32 HxWx3 RGB in [0, 1]
          label_7/I.npy                HxW class ids 0..6 (CITYSCAPES_7_CLASSES), -1 = ignore
          label_19/I.npy               HxW train ids 0..18 (CITYSCAPES_19_CLASSES), -1 = ignore
          depth/I.npy                  HxW or HxWx1 float depth as the preprocessing ships
                                       it, 0 = invalid

    ``num_classes`` (7 or 19) picks the label folder. The original gtFine release is read by
    the ``cityscapes`` reader instead.
    """

    name = "Cityscapes (MTAN)"

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, num_classes: int = 7, **common: Any) -> None:
        if num_classes not in (7, 19):
            raise DataError(f"cityscapes_mtan: num_classes must be 7 or 19, got {num_classes}")
        self.classes = CITYSCAPES_7_CLASSES if num_classes == 7 else CITYSCAPES_19_CLASSES
        self.task_dirs = {"seg": f"label_{num_classes}", "depth": "depth"}
        super().__init__(root, split, transforms, skip_invalid, **common)
