"""Cityscapes gtFine to a COCO instances JSON plus semantic train-id PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtvision.data.formats.cityscapes import (
    THING_CLASSES,
    CityscapesDataset,
    instances_from_ids,
    read_id_png,
)
from mtvision.data.io import DataError, image_size, write_json_atomic, write_png_atomic
from mtvision.data.polygons import mask_to_segmentation, xyxy_to_xywh


def cityscapes_to_coco(root: str | Path, dst_dir: str | Path, split: str = "train",
                       progress: bool = True) -> dict[str, Any]:
    """Convert a Cityscapes split (layout of the ``cityscapes`` reader) for COCO-style readers.

    Writes ``dst_dir/annotations/instances_SPLIT.json``: categories ``THING_CLASSES`` with ids
    1..8; every instance as ``iscrowd: 0`` with polygons from its mask (RLE when the mask has
    holes, which polygons cannot carry), every group region (a thing label id below 1000 in
    instanceIds) as ``iscrowd: 1`` with an RLE mask; ``bbox``
    the bounds of the pixels (xywh, pixel corners), ``area`` the pixel count. Images are
    referenced as ``CITY/CITY_SEQ_FRAME_leftImg8bit.png``, relative to
    ``ROOT/leftImg8bit/SPLIT``, so nothing is copied: the ``coco`` reader reads the original
    files with ``root: ROOT`` and ``options: {img_dir: "leftImg8bit/{split}", ann_file:
    "DST_DIR/annotations/instances_{split}.json"}`` (with ``dst_dir`` = ROOT, the default
    ``ann_file`` already fits). Image ids are the ``cityscapes`` reader's (1-based position in
    the sorted frame list).

    Also writes ``dst_dir/semantic/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png``:
    uint8 train ids 0..18 (``SEG_CLASSES``), 255 = ignore. Needs instanceIds and labelIds (or
    labelTrainIds) for every frame. Returns ``{"split", "images", "annotations", "instances",
    "crowd", "categories", "semantic_written", "ann_file", "semantic_dir"}``.
    """
    ds = CityscapesDataset(root, split)
    for task, what in (("det", "instanceIds"), ("seg", "labelIds / labelTrainIds")):
        if task not in ds.tasks:
            raise DataError(f"Cityscapes split '{split}' under '{ds.root}': no gtFine {what} "
                            f"PNGs in '{ds.gt_dir}'")
    dst = Path(dst_dir)
    ann_file = dst / "annotations" / f"instances_{split}.json"
    sem_dir = dst / "semantic" / split
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    n_inst = n_crowd = 0
    for i in tqdm(range(len(ds)), desc=f"cityscapes {split}", unit="img", disable=not progress):
        f = ds.frames[i]
        w, h = image_size(f.image)
        sem = ds.semantic(i)
        ids = read_id_png(f.instances)
        for path, shape in ((f.labels, sem.shape), (f.instances, ids.shape)):
            if shape != (h, w):
                raise DataError(f"Cityscapes labels '{path}' are {shape[1]}x{shape[0]}, "
                                f"the frame '{f.image}' is {w}x{h}")
        inst = instances_from_ids(ids, f.instances, with_masks=True)
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"{f.city}/{f.image.name}",
                       "width": w, "height": h})
        for crowd, boxes, labels, masks in ((0, inst.boxes, inst.labels, inst.masks),
                                            (1, inst.crowd_boxes, inst.crowd_labels,
                                             inst.crowd_masks)):
            for box, label, mask in zip(boxes, labels, masks, strict=True):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": int(label) + 1, "bbox": xyxy_to_xywh(box),
                    "area": float(mask.sum()), "iscrowd": crowd,
                    "segmentation": mask_to_segmentation(mask, bool(crowd))})
            n_crowd += crowd * len(boxes)
            n_inst += (1 - crowd) * len(boxes)
        write_png_atomic(sem, sem_dir / f.city / f"{f.stem}_gtFine_labelTrainIds.png")
    categories = [{"id": k + 1, "name": n, "supercategory": "cityscapes"}
                  for k, n in enumerate(THING_CLASSES)]
    write_json_atomic({"info": {"description": f"Cityscapes gtFine {split}"}, "images": images,
                       "annotations": annotations, "categories": categories}, ann_file)
    return {"split": split, "images": len(images), "annotations": len(annotations),
            "instances": n_inst, "crowd": n_crowd, "categories": len(categories),
            "semantic_written": len(images), "ann_file": str(ann_file),
            "semantic_dir": str(sem_dir)}
