"""BSDS500 ground truth (.mat, several annotators) to PNG edge maps, for tools that read images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtvision.data.formats.bsds import BSDS500Dataset
from mtvision.data.io import write_png_atomic


def annotator_maps(maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The union (255 where any annotator drew a boundary) and mean (255 * fraction of
    annotators, rounded half up) uint8 maps of the annotators' boolean boundary maps."""
    if not maps:
        raise ValueError("no annotator boundary maps")
    counts = np.stack([np.asarray(m, bool) for m in maps]).sum(axis=0, dtype=np.int64)
    k = len(maps)
    union = np.where(counts > 0, 255, 0).astype(np.uint8)
    # Integer arithmetic: 255 * c / K rounded half up, exact for halves such as 255 / 6.
    mean = ((2 * 255 * counts + k) // (2 * k)).astype(np.uint8)
    return union, mean


def bsds_to_png(bsds_root: str | Path, dst: str | Path, split: str = "test",
                progress: bool = True) -> dict[str, Any]:
    """Write each image's merged boundaries as ``dst/SPLIT/union/NAME.png`` and
    ``dst/SPLIT/mean/NAME.png`` (see ``annotator_maps``).

    ``bsds_root``: as for the ``bsds500`` reader (the folder above ``BSDS500``, ``BSDS500``
    or ``BSDS500/data``). Returns ``{"split", "images", "annotators", "files_written",
    "out_dir"}``. A missing or malformed ground-truth file raises ``DataError`` naming it.
    """
    ds = BSDS500Dataset(bsds_root, split)
    out = Path(dst) / split
    dirs = {name: out / name for name in ("union", "mean")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    annotators = written = 0
    for i in tqdm(range(len(ds)), desc=f"bsds500 {split}", unit="img", disable=not progress):
        raw = ds.read(i)
        maps = raw.edge_annotators or []
        union, mean = annotator_maps(maps)
        name = f"{Path(raw.file_name).stem}.png"
        write_png_atomic(union, dirs["union"] / name)
        write_png_atomic(mean, dirs["mean"] / name)
        annotators += len(maps)
        written += 2
    return {"split": split, "images": len(ds), "annotators": annotators,
            "files_written": written, "out_dir": str(out)}
