"""CamVid (Brostow et al., 2009) in the SegNet tutorial layout: 11 road-scene classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import DataError, read_image, read_mask
from mtvision.data.sample import RawSample
from mtvision.data.transforms import MASK_IGNORE
from mtvision.registry import DATASETS

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
VOID = 11  # the SegNet annotations' "Unlabelled" class


def find_camvid_dir(root: str | Path, split: str) -> Path:
    """The folder holding ``SPLIT/`` and ``SPLITannot/``: ``ROOT/CamVid`` or ``ROOT`` itself."""
    root = Path(root)
    for cand in (root / "CamVid", root):
        if (cand / split).is_dir():
            return cand
    raise DataError(f"CamVid split '{split}': neither '{root / 'CamVid' / split}' nor "
                    f"'{root / split}' exists")


@DATASETS.register("camvid")
class CamVidDataset(ReaderDataset):
    """CamVid semantic segmentation, splits ``train``, ``val`` and ``test``::

        ROOT/CamVid/                       (ROOT may also be the CamVid folder itself)
          SPLIT/NAME.png                   RGB frames (480x360 in the SegNet release)
          SPLITannot/NAME.png              uint8 class ids 0..10 (CAMVID_CLASSES), 11 = void

    Every frame needs its annotation of the same name. Void (11) becomes 255 (ignore); 255 in
    a file is also read as ignore.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.camvid_dir = find_camvid_dir(self.root, split)
        self.image_dir = self.camvid_dir / split
        self.annot_dir = self.camvid_dir / f"{split}annot"
        if not self.annot_dir.is_dir():
            raise DataError(f"CamVid split '{split}': annotation folder '{self.annot_dir}' "
                            "not found")
        self.images = sorted(p for p in self.image_dir.iterdir()
                             if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not self.images:
            raise DataError(f"CamVid split '{split}': no .png frames in '{self.image_dir}'")
        for img in self.images:
            if not (self.annot_dir / img.name).is_file():
                raise DataError(f"CamVid frame '{img}' has no annotation "
                                f"'{self.annot_dir / img.name}'")
        self._setup(["seg"], seg_classes=CAMVID_CLASSES)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return f"CamVid '{self.camvid_dir}' split '{self.split}'"

    def read(self, index: int) -> RawSample:
        img_path = self.images[index]
        image = read_image(img_path)
        annot = self.annot_dir / img_path.name
        m = read_mask(annot)
        if m.shape != image.shape[:2]:
            raise DataError(f"annotation '{annot}' is {m.shape[1]}x{m.shape[0]}, its frame is "
                            f"{image.shape[1]}x{image.shape[0]}")
        bad = (m > VOID) & (m != MASK_IGNORE)
        if bad.any():
            raise DataError(f"annotation '{annot}' has class id {int(m[bad].max())} out of range "
                            f"0..{len(CAMVID_CLASSES) - 1} (or {VOID} = void)")
        seg = np.where(m == VOID, MASK_IGNORE, m).astype(np.uint8)
        return RawSample(image=image, image_id=index, file_name=img_path.name, seg=seg)
