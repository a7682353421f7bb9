"""COCO instances JSON <-> Ultralytics YOLO text labels (boxes or polygons).

``coco_to_yolo`` keeps the COCO category ids in the ``data.yaml`` (``coco_category_ids``), so
``yolo_to_coco`` restores them; image ids survive too when the file names are COCO's numbers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from mtvision.data.formats.coco import CocoIndex
from mtvision.data.formats.yolo import (
    image_ids,
    label_path,
    load_data_yaml,
    parse_label_file,
    resolve_split,
)
from mtvision.data.io import DataError, read_image, write_json_atomic
from mtvision.data.polygons import mask_to_polygons, polygons_to_mask


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; datasets are shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _place_image(src: Path, dst: Path, symlink: bool) -> None:
    """Copy (or symlink) ``src`` to ``dst``, replacing what is there, never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        if symlink:
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def join_polygons(polygons: list[list[float]]) -> list[float]:
    """One outline through several polygon pieces (a YOLO line holds one polygon per object).

    Each piece is walked as a closed loop; the next piece is entered at its vertex nearest to
    the previous entry point, and the path returns along the same bridges at the end, so every
    bridge is a zero-area double edge and the filled region is the union of disjoint pieces.
    """
    pieces = [np.asarray(p, np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
    if not pieces:
        return []
    out = [*pieces[0], pieces[0][0]]
    entries = [pieces[0][0]]
    for piece in pieces[1:]:
        j = int(np.argmin(((piece - entries[-1]) ** 2).sum(axis=1)))
        loop = np.roll(piece, -j, axis=0)
        out += [*loop, loop[0]]
        entries.append(loop[0])
    if len(pieces) == 1:
        out = out[:-1]  # a single piece closes on its own
    else:
        out += entries[-2:0:-1]  # back to the first piece, whose start closes the outline
    return np.asarray(out).reshape(-1).tolist()


def _segment_polygons(index: CocoIndex, ann: dict[str, Any], image: Path, h: int,
                      w: int) -> list[list[float]]:
    """The annotation's outline as pixel polygons: its polygons, or the traced RLE mask."""
    seg = ann.get("segmentation")
    if not seg:
        return []
    if isinstance(seg, list):
        return index.polygons(ann, image)
    return mask_to_polygons(index.mask(ann, image, h, w))


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def coco_to_yolo(ann_file: str | Path, img_dir: str | Path, dst: str | Path,
                 split: str = "train", segments: bool = True, symlink_images: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Write a COCO split as a YOLO dataset: ``dst/images/SPLIT/``, ``dst/labels/SPLIT/*.txt``
    (one per image, empty when it has no objects) and ``dst/data.yaml``.

    ``segments``: polygon lines (``cls x1 y1 ...``, normalised, 6 decimals) from the polygons,
    several pieces joined into one outline (``join_polygons``), or from RLE masks traced with
    ``mask_to_polygons``; an annotation without a usable outline becomes a box line. Otherwise
    box lines (``cls cx cy w h``). ``iscrowd`` annotations are skipped (counted). Images are
    copied, or symlinked with ``symlink_images``. ``data.yaml`` gets ``names``, ``nc``,
    ``coco_category_ids`` and ``SPLIT: images/SPLIT``; an existing one (another split written
    before) is updated, and must have the same classes.

    Returns ``{"split", "images", "annotations", "polygons", "boxes", "crowd_skipped",
    "background_images", "classes", "data_yaml", "out_dir"}``. Bad input raises ``DataError``
    (missing image, unknown category, malformed bbox or segmentation) before anything is
    written when it is a missing image, else at the annotation.
    """
    index = CocoIndex(ann_file)
    img_dir, dst = Path(img_dir), Path(dst)
    if not index.categories:
        raise DataError(f"annotation file '{index.ann_file}' declares no categories")
    names = [str(c["name"]) for c in index.categories]
    cat_ids = [int(c["id"]) for c in index.categories]
    to_label = {cid: i for i, cid in enumerate(cat_ids)}

    # Check every input and output name first, so that a missing image does not leave half a
    # dataset behind.
    labels_dir = dst / "labels" / split
    seen: dict[Path, str] = {}
    for info in index.images:
        src = img_dir / str(info["file_name"])
        if not src.is_file():
            raise DataError(f"image '{src}' of '{index.ann_file}' not found")
        lab = (labels_dir / str(info["file_name"])).with_suffix(".txt")
        if lab in seen:
            raise DataError(f"images '{seen[lab]}' and '{info['file_name']}' of "
                            f"'{index.ann_file}' would share the label file '{lab}'")
        seen[lab] = str(info["file_name"])

    yaml_path = dst / "data.yaml"
    cfg: dict[str, Any] = {}
    if yaml_path.is_file():
        cfg = load_data_yaml(yaml_path)
        if cfg.get("names") not in (None, names) or cfg.get("coco_category_ids") not in (
                None, cat_ids):
            raise DataError(f"'{yaml_path}' exists with other classes than "
                            f"'{index.ann_file}'; write to another folder")

    counts = {"annotations": 0, "polygons": 0, "boxes": 0, "crowd_skipped": 0,
              "background_images": 0}
    for info in tqdm(index.images, desc=f"coco->yolo {split}", unit="img",
                     disable=not progress):
        rel = str(info["file_name"])
        src = img_dir / rel
        if "width" in info and "height" in info:
            w, h = int(info["width"]), int(info["height"])
        else:
            h, w = read_image(src).shape[:2]
        scale = np.array([w, h], np.float64)
        lines = []
        for ann in index.anns.get(info["id"], []):
            cid = index.check_category(ann, src)
            x0, y0, x1, y1 = index.box(ann, src)
            if ann.get("iscrowd", 0):
                counts["crowd_skipped"] += 1
                continue
            poly = join_polygons(_segment_polygons(index, ann, src, h, w)) if segments else []
            if poly:
                pts = np.clip(np.asarray(poly).reshape(-1, 2) / scale, 0.0, 1.0)
                # A sliver left after clipping to the image has no extent: use the box.
                if np.ptp(pts[:, 0]) > 0 and np.ptp(pts[:, 1]) > 0:
                    lines.append(f"{to_label[cid]} {_fmt(pts.reshape(-1))}")
                    counts["polygons"] += 1
                    continue
            bx = np.clip([x0, x1], 0, w) / w
            by = np.clip([y0, y1], 0, h) / h
            if bx[1] <= bx[0] or by[1] <= by[0]:
                raise DataError(f"{index.where(ann, src)} has bbox {ann.get('bbox')} outside "
                                f"the {w}x{h} image")
            lines.append(f"{to_label[cid]} "
                         + _fmt(np.array([bx.mean(), by.mean(), bx[1] - bx[0], by[1] - by[0]])))
            counts["boxes"] += 1
        counts["annotations"] += len(lines)
        counts["background_images"] += not lines
        _write_text_atomic("".join(f"{line}\n" for line in lines),
                           (labels_dir / rel).with_suffix(".txt"))
        _place_image(src, dst / "images" / split / rel, symlink_images)

    cfg.update({split: f"images/{split}", "nc": len(names), "names": names,
                "coco_category_ids": cat_ids})
    _write_text_atomic(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), yaml_path)
    return {"split": split, "images": len(index.images), **counts, "classes": len(names),
            "data_yaml": str(yaml_path), "out_dir": str(dst)}


def yolo_to_coco(data_yaml: str | Path, dst_json: str | Path, split: str = "train",
                 progress: bool = True) -> dict[str, Any]:
    """Write a YOLO split (as the ``yolo`` reader finds it) as a COCO instances JSON.

    Images get their decoded width/height and ids (file stems when all are distinct integers,
    else 1..N); ``file_name`` is relative to ``img_dir`` in the summary (the split's image
    folder). A polygon line becomes a pixel ``segmentation`` polygon, its box the polygon's
    bounds and ``area`` the mask area; a box line gets ``segmentation: []`` and the box area.
    Categories take ``coco_category_ids`` from the YAML when there, else ids 1..N.

    Returns ``{"split", "images", "annotations", "polygons", "boxes", "background_images",
    "categories", "json", "img_dir"}``.
    """
    yaml_path = Path(data_yaml)
    info = resolve_split(yaml_path.parent, split, yaml_path.name)
    ids = image_ids(info.images)
    n_cls = len(info.names)
    images, annotations = [], []
    counts = {"polygons": 0, "boxes": 0, "background_images": 0}
    for img, img_id in tqdm(list(zip(info.images, ids, strict=True)),
                            desc=f"yolo->coco {split}", unit="img", disable=not progress):
        h, w = read_image(img).shape[:2]
        try:
            file_name = img.relative_to(info.image_dir).as_posix()
        except ValueError:
            file_name = img.name
        images.append({"id": img_id, "file_name": file_name, "width": w, "height": h})
        lab = label_path(img)
        objects = parse_label_file(lab, n_cls, w, h) if lab.is_file() else []
        counts["background_images"] += not objects
        for o in objects:
            x0, y0, x1, y1 = o.box
            if o.polygon is not None:
                seg = [[round(v, 2) for v in o.polygon]]
                area = float(polygons_to_mask([o.polygon], h, w).sum())
                counts["polygons"] += 1
            else:
                seg, area = [], (x1 - x0) * (y1 - y0)
                counts["boxes"] += 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id,
                "category_id": info.cat_ids[o.label],
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(area, 2), "iscrowd": 0, "segmentation": seg})
    categories = [{"id": cid, "name": name} for cid, name in zip(info.cat_ids, info.names,
                                                                  strict=True)]
    write_json_atomic({"info": {"description": f"converted from '{yaml_path}' split '{split}'"},
                       "images": images, "annotations": annotations,
                       "categories": categories}, dst_json)
    return {"split": split, "images": len(images), "annotations": len(annotations), **counts,
            "categories": len(categories), "json": str(dst_json), "img_dir": str(info.image_dir)}
