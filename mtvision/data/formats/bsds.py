"""BSDS500 (Arbelaez et al., TPAMI 2011) in the original BSR release layout: edge detection
with several human annotators per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from mtvision.data import derive
from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS

EDGE_MODES = ("mean", "union")


def find_data_dir(root: str | Path) -> Path:
    """The BSR ``data`` folder (holding ``images/`` and ``groundTruth/``) for ``root``, which may
    be the folder above ``BSDS500``, ``BSDS500`` itself, or ``BSDS500/data``."""
    root = Path(root)
    for cand in (root / "BSDS500" / "data", root / "data", root):
        if (cand / "images").is_dir() and (cand / "groundTruth").is_dir():
            return cand
    raise DataError(f"no BSDS500 data under '{root}': expected folders 'images' and "
                    "'groundTruth' in ROOT/BSDS500/data, ROOT/data or ROOT")


def load_boundaries(mat_path: str | Path, hw: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The annotators' boolean boundary maps stored in a BSDS ``groundTruth`` .mat file.

    ``hw``: the image size the maps must have. Raises ``DataError`` naming the file when it
    cannot be read, lacks the ``groundTruth`` cell or the ``Boundaries`` field, or a map has
    another size.
    """
    p = Path(mat_path)
    try:
        mat = scipy.io.loadmat(str(p))
    except FileNotFoundError:
        raise DataError(f"cannot read ground truth '{p}': file not found") from None
    except Exception as e:
        # loadmat raises many types on bad bytes (IndexError, MatReadError, zlib errors,
        # NotImplementedError for v7.3 files): all mean "unreadable".
        raise DataError(f"cannot read ground truth '{p}': not a readable .mat file "
                        f"({type(e).__name__}: {e})") from None
    cell = mat.get("groundTruth")
    if not isinstance(cell, np.ndarray) or cell.dtype != object:
        raise DataError(f"ground truth '{p}' has no 'groundTruth' cell array "
                        f"(variables: {sorted(k for k in mat if not k.startswith('__'))})")
    if cell.size == 0:
        raise DataError(f"ground truth '{p}' has no annotators (empty 'groundTruth' cell)")
    maps = []
    for k, entry in enumerate(cell.ravel()):
        names = getattr(getattr(entry, "dtype", None), "names", None) or ()
        if "Boundaries" not in names or entry.size != 1:
            raise DataError(f"ground truth '{p}': annotator {k} is not a struct with a "
                            f"'Boundaries' field (fields: {list(names)})")
        b = np.asarray(entry["Boundaries"].ravel()[0])
        if b.ndim != 2 or not (b.dtype == bool or np.issubdtype(b.dtype, np.number)):
            raise DataError(f"ground truth '{p}': annotator {k} boundaries are {b.shape} "
                            f"{b.dtype}, expected a 2-D numeric map")
        if hw is not None and b.shape != tuple(hw):
            raise DataError(f"ground truth '{p}': annotator {k} boundaries are "
                            f"{b.shape[1]}x{b.shape[0]}, the image is {hw[1]}x{hw[0]}")
        maps.append(b != 0)
    return maps


@DATASETS.register("bsds500")
class BSDS500Dataset(ReaderDataset):
    """BSDS500 edges, one sample per image of a split (``train``, ``val`` or ``test``)::

        ROOT/BSDS500/data/                 (ROOT may also be BSDS500/ or BSDS500/data/)
          images/SPLIT/NAME.jpg            RGB images (other files there are ignored)
          groundTruth/SPLIT/NAME.mat       variable ``groundTruth``: 1xK cell of structs with
                                           ``Boundaries`` (HxW 0/1 map, one per annotator) and
                                           ``Segmentation`` (not read)

    Every image needs its .mat. A sample's ``edge_annotators`` are the K boolean maps (kept at
    full resolution for the benchmark); its ``edge`` target merges them
    (``derive.edges_from_annotators``): ``edge_mode: mean`` marks pixels that at least
    ``edge_threshold`` of the annotators drew as edges, unmarked ones as not, and ignores the
    rest (RCF); ``union`` marks any annotator's boundary. ``image_id`` is the numeric file name.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, edge_mode: str = "mean",
                 edge_threshold: float = 0.3, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        if edge_mode not in EDGE_MODES:
            raise DataError(f"bsds500: edge_mode must be one of {EDGE_MODES}, got {edge_mode!r}")
        if not 0.0 < float(edge_threshold) <= 1.0:
            raise DataError(f"bsds500: edge_threshold must be in (0, 1], got {edge_threshold}")
        self.edge_mode = edge_mode
        self.edge_threshold = float(edge_threshold)
        self.data_dir = find_data_dir(self.root)
        self.image_dir = self.data_dir / "images" / split
        self.gt_dir = self.data_dir / "groundTruth" / split
        for d in (self.image_dir, self.gt_dir):
            if not d.is_dir():
                raise DataError(f"BSDS500 split '{split}': folder '{d}' not found")
        self.images = sorted(p for p in self.image_dir.iterdir()
                             if p.suffix.lower() == ".jpg" and not p.name.startswith("."))
        if not self.images:
            raise DataError(f"BSDS500 split '{split}': no .jpg images in '{self.image_dir}'")
        for img in self.images:
            if not (self.gt_dir / f"{img.stem}.mat").is_file():
                raise DataError(f"BSDS500 image '{img}' has no ground truth "
                                f"'{self.gt_dir / (img.stem + '.mat')}'")
        numeric = all(p.stem.isdigit() for p in self.images)
        self._ids = [int(p.stem) if numeric else i for i, p in enumerate(self.images)]
        self._setup(["edge"])

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return f"BSDS500 '{self.data_dir}' split '{self.split}'"

    def mat_path(self, index: int) -> Path:
        """The ground-truth file of sample ``index``."""
        return self.gt_dir / f"{self.images[index].stem}.mat"

    def read(self, index: int) -> RawSample:
        img_path = self.images[index]
        image = read_image(img_path)
        maps = load_boundaries(self.mat_path(index), image.shape[:2])
        edge = derive.edges_from_annotators(maps, self.edge_mode, self.edge_threshold)
        return RawSample(image=image, image_id=self._ids[index], file_name=img_path.name,
                         edge=edge, edge_annotators=maps)
