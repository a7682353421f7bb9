"""coco_to_yolo / yolo_to_coco: label files against the JSON, box mode, RLE objects, image
placement, data.yaml updates, hand-computed YOLO -> COCO values and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from mtvision.data.convert.coco_yolo import coco_to_yolo, join_polygons, yolo_to_coco
from mtvision.data.formats.coco import CocoDataset
from mtvision.data.formats.yolo import YoloDataset
from mtvision.data.io import DataError


@pytest.fixture(scope="module")
def coco_dir(samples_dir: Path) -> Path:
    return samples_dir / "coco"


@pytest.fixture(scope="module")
def coco_json(coco_dir: Path) -> dict[str, Any]:
    return json.loads((coco_dir / "annotations.json").read_text())


def _plain(data: dict[str, Any], image_id: int) -> list[dict[str, Any]]:
    return [a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]


def _rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def test_labels_follow_the_json(tmp_path: Path, coco_dir: Path, coco_json: dict) -> None:
    s = coco_to_yolo(coco_dir / "annotations.json", coco_dir / "images", tmp_path, split="val",
                     progress=False)
    anns, images = coco_json["annotations"], coco_json["images"]
    sorted_ids = sorted(c["id"] for c in coco_json["categories"])
    assert s == {"split": "val", "images": len(images),
                 "annotations": sum(not a["iscrowd"] for a in anns),
                 "polygons": sum(not a["iscrowd"] for a in anns), "boxes": 0,
                 "crowd_skipped": sum(a["iscrowd"] for a in anns),
                 "background_images": sum(not _plain(coco_json, im["id"]) for im in images),
                 "classes": 80, "data_yaml": str(tmp_path / "data.yaml"),
                 "out_dir": str(tmp_path)}
    assert (s["annotations"], s["crowd_skipped"], s["background_images"]) == (35, 1, 1)
    cfg = yaml.safe_load((tmp_path / "data.yaml").read_text())
    cats = sorted(coco_json["categories"], key=lambda c: c["id"])
    assert cfg == {"val": "images/val", "nc": 80, "names": [c["name"] for c in cats],
                   "coco_category_ids": [c["id"] for c in cats]}
    for im in images:
        out_img = tmp_path / "images" / "val" / im["file_name"]
        assert out_img.read_bytes() == (coco_dir / "images" / im["file_name"]).read_bytes()
        rows = _rows(tmp_path / "labels" / "val" / (Path(im["file_name"]).stem + ".txt"))
        plain = _plain(coco_json, im["id"])
        assert [int(r[0]) for r in rows] == [sorted_ids.index(a["category_id"]) for a in plain]
        for r, a in zip(rows, plain, strict=True):
            if len(a["segmentation"]) == 1:  # one piece: the same vertices, normalised
                want = np.asarray(a["segmentation"][0]).reshape(-1, 2) / [im["width"],
                                                                          im["height"]]
                np.testing.assert_allclose(np.reshape(r[1:], (-1, 2)), want, atol=1e-6)
    text = (tmp_path / "labels" / "val" / "000000343934.txt").read_text()
    assert all(len(v.split(".")[1]) == 6 for v in text.split()[1:])  # 6 decimals


def test_converted_dataset_reads_like_the_original(tmp_path: Path, coco_dir: Path) -> None:
    coco_to_yolo(coco_dir / "annotations.json", coco_dir / "images", tmp_path, split="val",
                 progress=False)
    coco = CocoDataset(coco_dir, "val", ann_file="annotations.json", img_dir="images")
    yolo = YoloDataset(tmp_path, "val")
    assert yolo.det_classes == coco.det_classes and yolo.cat_ids == coco.cat_ids
    by_id = {yolo.read(i).image_id: yolo.read(i) for i in range(len(yolo))}
    for i in range(len(coco)):
        a = coco.read(i)
        b = by_id[a.image_id]
        assert b.labels.tolist() == a.labels.tolist()
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1.0)


def test_boxes_mode_hand_values(tmp_path: Path, coco_dir: Path, coco_json: dict) -> None:
    s = coco_to_yolo(coco_dir / "annotations.json", coco_dir / "images", tmp_path,
                     segments=False, progress=False)
    assert (s["polygons"], s["boxes"]) == (0, 35)
    im = next(i for i in coco_json["images"] if i["file_name"] == "000000343934.jpg")
    (a,) = _plain(coco_json, im["id"])
    rows = _rows(tmp_path / "labels" / "train" / "000000343934.txt")
    x, y, w, h = a["bbox"]
    W, H = im["width"], im["height"]
    assert rows[0][0] == sorted(c["id"] for c in coco_json["categories"]).index(
        a["category_id"])
    np.testing.assert_allclose(rows[0][1:], [(x + w / 2) / W, (y + h / 2) / H, w / W, h / H],
                               atol=1e-6)


def test_rle_object_traced_and_images_symlinked(tmp_path: Path, coco_dir: Path,
                                                coco_json: dict) -> None:
    data = json.loads(json.dumps(coco_json))
    im = next(i for i in data["images"] if i["file_name"] == "000000343934.jpg")
    data["images"] = [im]
    (a,) = _plain(data, im["id"])
    h, w = im["height"], im["width"]
    rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
    ref = mask_utils.decode(rle)
    a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    (tmp_path / "a.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    orphans = len(data["annotations"]) - 1  # the other images' annotations stay in the file
    with pytest.warns(UserWarning, match=f"{orphans} annotations refer to images not in "
                      "'images'; ignored"):
        s = coco_to_yolo(tmp_path / "a.json", coco_dir / "images", out, symlink_images=True,
                         progress=False)
    assert (s["images"], s["polygons"]) == (1, 1)
    link = out / "images" / "train" / im["file_name"]
    assert link.is_symlink() and os.readlink(link) == str((coco_dir / "images" /
                                                           im["file_name"]).resolve())
    (row,) = _rows(out / "labels" / "train" / "000000343934.txt")
    poly = (np.reshape(row[1:], (-1, 2)) * [w, h]).reshape(-1).tolist()
    got = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))
    iou = (got & ref).sum() / (got | ref).sum()
    assert iou > 0.97


def test_second_split_updates_the_yaml(tmp_path: Path, coco_dir: Path,
                                       coco_json: dict) -> None:
    for split in ("train", "val"):
        coco_to_yolo(coco_dir / "annotations.json", coco_dir / "images", tmp_path, split=split,
                     progress=False)
    cfg = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert (cfg["train"], cfg["val"]) == ("images/train", "images/val")
    other = json.loads(json.dumps(coco_json))
    other["categories"] = other["categories"][:79]  # drop toothbrush (unused)
    (tmp_path / "o.json").write_text(json.dumps(other))
    with pytest.raises(DataError) as info:
        coco_to_yolo(tmp_path / "o.json", coco_dir / "images", tmp_path, progress=False)
    assert str(info.value) == (f"'{tmp_path / 'data.yaml'}' exists with other classes than "
                               f"'{tmp_path / 'o.json'}'; write to another folder")


def test_bad_coco_input(tmp_path: Path, coco_dir: Path, coco_json: dict) -> None:
    data = json.loads(json.dumps(coco_json))
    data["images"][0]["file_name"] = "missing.jpg"
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        coco_to_yolo(tmp_path / "a.json", coco_dir / "images", tmp_path / "out", progress=False)
    assert str(info.value) == (f"image '{coco_dir / 'images' / 'missing.jpg'}' of "
                               f"'{tmp_path / 'a.json'}' not found")
    assert not (tmp_path / "out").exists()  # checked before anything is written

    data = json.loads(json.dumps(coco_json))
    a = data["annotations"][0]
    a["category_id"] = 0
    img = next(i["file_name"] for i in data["images"] if i["id"] == a["image_id"])
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        coco_to_yolo(tmp_path / "a.json", coco_dir / "images", tmp_path / "out", progress=False)
    assert str(info.value) == (f"'{tmp_path / 'a.json'}': annotation {a['id']} of image "
                               f"'{coco_dir / 'images' / img}' has category_id 0, not among "
                               "the 80 declared category ids (1..90)")


def test_yolo_to_coco_hand_values(tmp_path: Path) -> None:
    img_dir = tmp_path / "images" / "val"
    img_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "scene.png"), np.zeros((40, 50, 3), np.uint8))
    cv2.imwrite(str(img_dir / "empty.png"), np.zeros((10, 20, 3), np.uint8))
    (tmp_path / "labels" / "val").mkdir(parents=True)
    # 50x40: box centre (25, 20) size (10, 16); polygon (0, 0), (20, 0), (20, 20), (0, 20).
    (tmp_path / "labels" / "val" / "scene.txt").write_text(
        "1 0.5 0.5 0.2 0.4\n0 0 0 0.4 0 0.4 0.5 0 0.5\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(
        {"val": "images/val", "names": ["a", "b"], "coco_category_ids": [3, 7]}))
    s = yolo_to_coco(tmp_path / "data.yaml", tmp_path / "out.json", split="val",
                     progress=False)
    assert s == {"split": "val", "images": 2, "annotations": 2, "polygons": 1, "boxes": 1,
                 "background_images": 1, "categories": 2, "json": str(tmp_path / "out.json"),
                 "img_dir": str(img_dir)}
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["categories"] == [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    # Sorted file names, ids 1..N (the stems are not numbers).
    assert out["images"] == [{"id": 1, "file_name": "empty.png", "width": 20, "height": 10},
                             {"id": 2, "file_name": "scene.png", "width": 50, "height": 40}]
    box, poly = out["annotations"]
    assert box == {"id": 1, "image_id": 2, "category_id": 7, "bbox": [20.0, 12.0, 10.0, 16.0],
                   "area": 160.0, "iscrowd": 0, "segmentation": []}
    assert poly == {"id": 2, "image_id": 2, "category_id": 3, "bbox": [0.0, 0.0, 20.0, 20.0],
                    "area": 400.0, "iscrowd": 0,
                    "segmentation": [[0.0, 0.0, 20.0, 0.0, 20.0, 20.0, 0.0, 20.0]]}


def test_join_polygons_keeps_the_union() -> None:
    a = [2, 2, 10, 2, 10, 10, 2, 10]
    b = [20, 5, 30, 5, 30, 15, 20, 15]
    c = [5, 20, 12, 20, 8, 28]
    joined = join_polygons([a, b, c])
    assert join_polygons([a]) == [float(v) for v in a]
    # pycocotools draws the parts separately and merges them: the reference union.
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([a, b, c], 40, 40)))
    got = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([joined], 40, 40)))
    assert ref.sum() > 0 and (got == ref).all()
    assert set(zip(joined[::2], joined[1::2], strict=True)) == {
        (float(x), float(y)) for p in (a, b, c) for x, y in zip(p[::2], p[1::2], strict=True)}
