"""``masks2edges``: edge-map PNGs from a folder of label maps (semantic or instance ids)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtvision.data.derive import IGNORE, edges_from_labels
from mtvision.data.io import DataError, read_label_map, write_png_atomic

LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def masks_to_edges(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   thickness: int = 2, ignore_index: int | None = IGNORE,
                   progress: bool = True) -> dict[str, Any]:
    """For every label map under ``src`` (recursively), write its boundary map to the same
    relative path under ``dst``: 255 on edges, 0 elsewhere (ignored regions included).

    Boundaries are where the label changes (``mtvision.data.derive.edges_from_labels``,
    ``thickness`` pixels wide); pixels labelled ``ignore_index`` are not boundaries. An instance
    id map gives instance outlines, a semantic map class boundaries. The mtvision reader reads
    these PNGs as edge labels (``>= 128`` = edge).
    """
    src_dir, dst_dir = Path(src), Path(dst)
    if not src_dir.is_dir():
        raise DataError(f"masks2edges: source folder '{src_dir}' not found")
    files = sorted(p for p in src_dir.rglob("*") if p.suffix.lower() in LABEL_SUFFIXES)
    if not files:
        raise DataError(f"masks2edges: no label maps ({', '.join(LABEL_SUFFIXES)}) under "
                        f"'{src_dir}'")
    edge_pixels = 0
    for path in tqdm(files, desc="masks2edges", disable=not progress, dynamic_ncols=True):
        labels = read_label_map(path)
        edge = edges_from_labels(labels, thickness, ignore_index)
        out = np.where(edge == 1, 255, 0).astype(np.uint8)
        edge_pixels += int((edge == 1).sum())
        write_png_atomic(out, (dst_dir / path.relative_to(src_dir)).with_suffix(".png"))
    return {"images": len(files), "edge_pixels": edge_pixels, "dst": str(dst_dir)}
