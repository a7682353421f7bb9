"""Pascal VOC XML (and SegmentationObject masks) to one COCO instances JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtvision.data.formats.voc import (
    VOC_CLASSES,
    VOCDataset,
    instance_masks_for,
    parse_voc_xml,
)
from mtvision.data.io import DataError, image_size, read_label_map, write_json_atomic
from mtvision.data.polygons import mask_to_segmentation, xyxy_to_xywh


def voc_to_coco(voc_root: str | Path, dst_json: str | Path, image_set: str | None = None,
                split: str = "train", progress: bool = True) -> dict[str, Any]:
    """Write the images of a VOC split that have an XML as a COCO instances JSON.

    ``voc_root``, ``image_set`` and ``split`` select the images as for the ``voc`` reader
    (``VOCDataset``); images without an XML (segmentation only) are left out and counted.
    Categories are the 20 VOC classes, ids 1..20 in ``VOC_CLASSES`` order. Each object's
    ``bbox`` is ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` (the 1-based
    inclusive XML values as pixel corners). ``difficult`` objects get ``iscrowd: 1``:
    COCOeval then neither rewards nor penalises detections on them, as the VOC evaluation
    ignores difficult objects. Where ``SegmentationObject/NAME.png`` exists, ``segmentation``
    holds the object's mask (``mask_to_segmentation``: polygons, RLE for crowds and for masks with
    holes) and ``area`` its pixel count; otherwise there is no ``segmentation`` (the mask is
    unknown, not empty) and ``area`` is the box area. Image ids are the reader's (the name's
    digits, ``voc_image_ids``); ``file_name`` is ``NAME.jpg``, so images stay in place: the
    ``coco`` reader takes ``root: VOC_ROOT``, ``options: {img_dir: JPEGImages, ann_file:
    DST_JSON}``. Returns ``{"split", "images", "annotations", "difficult", "with_masks",
    "categories", "skipped_no_xml", "dst"}``.
    """
    ds = VOCDataset(voc_root, split, image_set=image_set)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    difficult = with_masks = skipped = 0
    for i in tqdm(range(len(ds)), desc=f"voc {split}", unit="img", disable=not progress):
        if not ds.has_xml[i]:
            skipped += 1
            continue
        name = ds.names[i]
        img_path = ds.image_dir / f"{name}.jpg"
        # The header gives the size without decoding the JPEG.
        w, h = image_size(img_path)
        ann = parse_voc_xml(ds.xml_path(i))
        if ann.width and ann.height and (ann.width, ann.height) != (w, h):
            raise DataError(f"VOC annotation '{ann.path}' gives size {ann.width}x{ann.height}, "
                            f"its image '{img_path}' is {w}x{h}")
        masks = None
        if ds.has_objects[i]:
            path = ds.object_path(i)
            ids = read_label_map(path, "mask")
            if ids.shape != (h, w):
                raise DataError(f"VOC object mask '{path}' is {ids.shape[1]}x{ids.shape[0]}, "
                                f"its image is {w}x{h}")
            masks = instance_masks_for(ids, ann, path)
        image_id = ds.image_ids[i]
        images.append({"id": image_id, "file_name": img_path.name, "width": w, "height": h})
        for k, obj in enumerate(ann.objects):
            bbox = xyxy_to_xywh(obj.box)
            entry: dict[str, Any] = {
                "id": len(annotations) + 1, "image_id": image_id, "category_id": obj.label + 1,
                "bbox": bbox, "area": bbox[2] * bbox[3],
                "iscrowd": int(obj.difficult)}
            if masks is not None and masks[k].any():
                entry["segmentation"] = mask_to_segmentation(masks[k], obj.difficult)
                entry["area"] = float(masks[k].sum())
                with_masks += 1
            difficult += int(obj.difficult)
            annotations.append(entry)
    categories = [{"id": i + 1, "name": n, "supercategory": "voc"}
                  for i, n in enumerate(VOC_CLASSES)]
    write_json_atomic({"info": {"description": f"Pascal VOC {split}"}, "images": images,
                       "annotations": annotations, "categories": categories}, dst_json)
    return {"split": split, "images": len(images), "annotations": len(annotations),
            "difficult": difficult, "with_masks": with_masks, "categories": len(categories),
            "skipped_no_xml": skipped, "dst": str(dst_json)}
