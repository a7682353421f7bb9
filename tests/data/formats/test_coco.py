"""The ``coco`` reader on the real COCO val2017 subset (tests/data/samples/coco) and bad inputs.

References are computed here from the JSON with plain ``json`` and with pycocotools' COCO API.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mtvision.data.formats.coco import CocoDataset
from mtvision.data.io import DataError
from mtvision.registry import DATASETS


@pytest.fixture(scope="module")
def coco_dir(samples_dir: Path) -> Path:
    return samples_dir / "coco"


@pytest.fixture(scope="module")
def coco_json(coco_dir: Path) -> dict[str, Any]:
    return json.loads((coco_dir / "annotations.json").read_text())


@pytest.fixture(scope="module")
def coco_api(coco_dir: Path) -> COCO:
    return COCO(str(coco_dir / "annotations.json"))


def _open(coco_dir: Path, **kw: Any) -> CocoDataset:
    return CocoDataset(coco_dir, "val2017", ann_file="annotations.json", img_dir="images", **kw)


def _copy_with(tmp_path: Path, coco_dir: Path, data: dict[str, Any]) -> Path:
    """A tmp dataset: the given JSON and the sample images (copied, so tests may damage them)."""
    shutil.copytree(coco_dir / "images", tmp_path / "images")
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    return tmp_path


def _anns(data: dict[str, Any], image_id: int, crowd: bool) -> list[dict[str, Any]]:
    return [a for a in data["annotations"]
            if a["image_id"] == image_id and bool(a["iscrowd"]) == crowd]


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


# ----------------------------------------------------------------------------------------------


def test_counts_boxes_and_labels_match_the_json(coco_dir: Path, coco_json: dict) -> None:
    ds = _open(coco_dir)
    sorted_ids = sorted(c["id"] for c in coco_json["categories"])
    anns = coco_json["annotations"]
    # The sample's documented make-up, then the same numbers computed from the file.
    assert (len(coco_json["images"]), len(anns), len(coco_json["categories"])) == (6, 36, 80)
    assert sum(a["iscrowd"] for a in anns) == 1
    assert len({a["category_id"] for a in anns}) == 8

    assert len(ds) == len(coco_json["images"])
    n_boxes = n_crowd = 0
    used: set[int] = set()
    for i, info in enumerate(coco_json["images"]):
        raw = ds.read(i)
        assert (raw.image_id, raw.file_name) == (info["id"], info["file_name"])
        assert raw.hw == (info["height"], info["width"])
        plain, crowd = _anns(coco_json, info["id"], False), _anns(coco_json, info["id"], True)
        np.testing.assert_allclose(raw.boxes, np.array([_xyxy(a["bbox"]) for a in plain],
                                                       np.float32).reshape(-1, 4), rtol=1e-6)
        assert raw.labels.tolist() == [sorted_ids.index(a["category_id"]) for a in plain]
        assert raw.crowd_labels.tolist() == [sorted_ids.index(a["category_id"]) for a in crowd]
        assert raw.instance_masks is None  # not decoded unless something needs them
        n_boxes += len(raw.boxes)
        n_crowd += len(raw.crowd_boxes)
        used |= set(raw.labels.tolist()) | set(raw.crowd_labels.tolist())
    assert (n_boxes, n_crowd) == (sum(not a["iscrowd"] for a in anns), 1)
    assert len(used) == 8


def test_category_remap_contiguous_over_declared(coco_dir: Path, coco_json: dict) -> None:
    ds = _open(coco_dir)
    cats = sorted(coco_json["categories"], key=lambda c: c["id"])
    assert ds.cat_ids == [c["id"] for c in cats] and len(ds.cat_ids) == 80
    assert ds.det_classes == [c["name"] for c in cats]
    assert ds.num_classes == {"det": 80} and ds.tasks == ["det"]
    # COCO ids have gaps (1..90 for 80 classes): bottle is id 44 but label 39, as in COCO-80.
    assert ds.cat_ids[39] == 44 and ds.det_classes[39] == "bottle"
    labels = np.concatenate([ds.read(i).labels for i in range(len(ds))])
    used_ids = {a["category_id"] for a in coco_json["annotations"] if not a["iscrowd"]}
    assert {ds.cat_ids[k] for k in labels.tolist()} == used_ids


def test_crowd_region_is_never_a_training_box(coco_dir: Path, coco_json: dict) -> None:
    ds = _open(coco_dir)
    (crowd,) = [a for a in coco_json["annotations"] if a["iscrowd"]]
    i = [im["id"] for im in coco_json["images"]].index(crowd["image_id"])
    det = ds[i]["targets"]["det"]
    assert det["crowd_boxes"].tolist() == [_xyxy(crowd["bbox"])]
    assert det["crowd_labels"].tolist() == [ds.cat_ids.index(crowd["category_id"])]
    assert len(det["boxes"]) == len(_anns(coco_json, crowd["image_id"], False))
    assert _xyxy(crowd["bbox"]) not in det["boxes"].tolist()


def test_instance_masks_equal_pycocotools(coco_dir: Path, coco_json: dict,
                                          coco_api: COCO) -> None:
    ds = _open(coco_dir, instance_masks=True)
    for i, info in enumerate(coco_json["images"]):
        raw = ds.read(i)
        for crowd, got in ((False, raw.instance_masks), (True, raw.crowd_masks)):
            want = [coco_api.annToMask(a) for a in _anns(coco_json, info["id"], crowd)]
            assert got.dtype == np.uint8 and got.shape == (len(want), *raw.hw)
            if want:
                assert (got == np.stack(want)).all()
        if len(raw.crowd_masks):  # the uncompressed RLE
            assert raw.crowd_masks.sum() > 0
    sample = ds[i]
    assert sample["targets"]["det"]["masks"].shape[0] == len(sample["targets"]["det"]["boxes"])


def test_compressed_rle_equals_pycocotools(tmp_path: Path, coco_dir: Path, coco_json: dict,
                                           coco_api: COCO) -> None:
    data = json.loads(json.dumps(coco_json))
    (crowd,) = [a for a in data["annotations"] if a["iscrowd"]]
    info = coco_api.imgs[crowd["image_id"]]
    rle = mask_utils.frPyObjects(crowd["segmentation"], info["height"], info["width"])
    crowd["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    plain = _anns(data, crowd["image_id"], False)[0]  # also a non-crowd object as RLE
    prle = mask_utils.merge(mask_utils.frPyObjects(plain["segmentation"], info["height"],
                                                   info["width"]))
    plain["segmentation"] = {"size": prle["size"], "counts": prle["counts"].decode("ascii")}
    root = _copy_with(tmp_path, coco_dir, data)
    ds = CocoDataset(root, "x", ann_file="annotations.json", img_dir="images",
                     instance_masks=True)
    i = [im["id"] for im in data["images"]].index(crowd["image_id"])
    raw = ds.read(i)
    assert (raw.crowd_masks[0] == coco_api.annToMask(
        [a for a in coco_json["annotations"] if a["iscrowd"]][0])).all()
    assert (raw.instance_masks[0] == mask_utils.decode(prle)).all()


def test_derived_seg_and_edges_follow_the_masks(coco_dir: Path, coco_json: dict,
                                               coco_api: COCO) -> None:
    ds = _open(coco_dir, derive_seg=True, derive_edges="instances")
    assert ds.tasks == ["det", "seg", "edge"]
    assert ds.seg_classes == ["background", *ds.det_classes]
    (crowd,) = [a for a in coco_json["annotations"] if a["iscrowd"]]
    i = [im["id"] for im in coco_json["images"]].index(crowd["image_id"])
    t = ds[i]["targets"]
    seg, edge = t["seg"].numpy(), t["edge"].numpy()
    plain = _anns(coco_json, crowd["image_id"], False)
    masks = np.stack([coco_api.annToMask(a) for a in plain]).astype(bool)
    crowd_m = coco_api.annToMask(crowd).astype(bool)
    cover = masks.sum(0)
    for a, m in zip(plain, masks, strict=True):
        only = m & (cover == 1)  # pixels of this object alone
        assert only.any() and (seg[only] == ds.cat_ids.index(a["category_id"]) + 1).all()
    assert (seg[(cover == 0) & ~crowd_m] == 0).all()
    assert (seg[crowd_m & (cover == 0)] == 255).all()
    assert set(np.unique(edge).tolist()) <= {0, 1, 255} and (edge == 1).any()
    # Edges lie on object outlines (also between touching objects): none farther than the
    # thickness from the boundary of some mask.
    far = np.ones(seg.shape, bool)
    for m in [*masks, crowd_m]:
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                far &= np.roll(np.roll(m, dy, 0), dx, 1) == m
    assert not (edge[far] == 1).any()


def test_classes_option_keeps_and_orders(coco_dir: Path, coco_json: dict) -> None:
    ds = _open(coco_dir, classes=["bottle", "person"])
    assert ds.det_classes == ["bottle", "person"] and ds.cat_ids == [44, 1]
    labels, crowd = [], []
    for i in range(len(ds)):
        raw = ds.read(i)
        labels += raw.labels.tolist()
        crowd += raw.crowd_labels.tolist()
    plain = [a["category_id"] for a in coco_json["annotations"] if not a["iscrowd"]]
    assert labels.count(0) == plain.count(44) and labels.count(1) == plain.count(1)
    assert len(labels) == plain.count(44) + plain.count(1) and crowd == [0]
    with pytest.raises(DataError, match="no category named 'botle' \\(did you mean 'bottle'"):
        _open(coco_dir, classes=["botle"])


def test_default_coco2017_layout_and_registry(tmp_path: Path, coco_dir: Path) -> None:
    (tmp_path / "annotations").mkdir()
    shutil.copy(coco_dir / "annotations.json",
                tmp_path / "annotations" / "instances_val2017.json")
    (tmp_path / "val2017").symlink_to((coco_dir / "images").resolve())
    ds = DATASETS.build({"name": "coco", "root": str(tmp_path), "split": "val2017"})
    assert isinstance(ds, CocoDataset) and len(ds) == 6
    assert ds[0]["image"].shape[0] == 3
    with pytest.raises(DataError) as info:
        CocoDataset(tmp_path, "train2017")
    assert str(info.value) == (f"annotation file '{tmp_path}/annotations/"
                               "instances_train2017.json' not found")
    with pytest.raises(DataError) as info:
        CocoDataset(tmp_path, "val2017", img_dir="nope")
    assert str(info.value) == (f"'{tmp_path}/annotations/instances_val2017.json': image "
                               f"folder '{tmp_path}/nope' not found")


# ----------------------------------------------------------------------------------------------
# Bad inputs: one-line messages naming the file


def _first_ann_image(data: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Index, image entry and first plain annotation of the first image with objects."""
    for i, im in enumerate(data["images"]):
        anns = _anns(data, im["id"], False)
        if anns:
            return i, im, anns[0]
    raise AssertionError("no annotated image")


@pytest.mark.parametrize("problem", ["category", "bbox", "degenerate", "size", "rle_size",
                                     "polygon"])
def test_bad_annotations_raise(tmp_path: Path, coco_dir: Path, coco_json: dict,
                               problem: str) -> None:
    data = json.loads(json.dumps(coco_json))
    i, im, ann = _first_ann_image(data)
    img = tmp_path / "images" / im["file_name"]
    ann_file = tmp_path / "annotations.json"
    where = f"'{ann_file}': annotation {ann['id']} of image '{img}'"
    masks = False
    if problem == "category":
        ann["category_id"] = 999
        expected = (f"{where} has category_id 999, not among the 80 declared category ids "
                    "(1..90)")
    elif problem == "bbox":
        ann["bbox"] = [1, 2, 3]
        expected = f"{where} has bad bbox [1, 2, 3] (expected [x, y, width, height] numbers)"
    elif problem == "degenerate":
        ann["bbox"] = [10, 20, 0, 5]
        expected = f"{where} has degenerate bbox [10, 20, 0, 5] (width and height must be > 0)"
    elif problem == "size":
        im["width"] += 1
        expected = (f"image '{img}' is {im['width'] - 1}x{im['height']} but 'annotations.json' "
                    f"says {im['width']}x{im['height']}")
    elif problem == "rle_size":
        ann["segmentation"] = {"size": [10, 10], "counts": [100]}
        masks = True
        expected = (f"{where} has a malformed segmentation: RLE size [10, 10] differs from the "
                    f"image's [height, width] [{im['height']}, {im['width']}]")
    else:
        ann["segmentation"] = [[1, 2, 3]]
        masks = True
        expected = (f"{where} has a malformed segmentation: polygons must be lists of x, y "
                    "numbers")
    root = _copy_with(tmp_path, coco_dir, data)
    ds = CocoDataset(root, "x", ann_file="annotations.json", img_dir="images",
                     instance_masks=masks)
    with pytest.raises(DataError) as info:
        ds[i]
    assert str(info.value) == expected


def test_corrupt_and_missing_image(tmp_path: Path, coco_dir: Path, coco_json: dict) -> None:
    root = _copy_with(tmp_path, coco_dir, coco_json)
    ds = CocoDataset(root, "x", ann_file="annotations.json", img_dir="images")
    bad = root / "images" / coco_json["images"][0]["file_name"]
    bad.write_bytes(b"\xff\xd8 not really a jpeg" * 20)
    with pytest.raises(DataError) as info:
        ds[0]
    assert str(info.value) == (f"cannot read image '{bad}': not a decodable image (corrupt or "
                               "unsupported)")
    bad.unlink()
    with pytest.raises(DataError) as info:
        ds[0]
    assert str(info.value) == f"cannot read image '{bad}': file not found"


def test_malformed_json(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "a.json").write_text('{"images": [}')
    with pytest.raises(DataError) as info:
        CocoDataset(tmp_path, "x", ann_file="a.json", img_dir="images")
    assert str(info.value).startswith(f"cannot read annotation file '{tmp_path}/a.json': ")
    assert "\n" not in str(info.value)
    (tmp_path / "a.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
         "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DataError) as info:
        CocoDataset(tmp_path, "x", ann_file="a.json", img_dir="images")
    assert str(info.value) == (f"annotation file '{tmp_path}/a.json': image id 1 is used more "
                               "than once")


def test_skip_invalid_skips_the_bad_image(tmp_path: Path, coco_dir: Path,
                                          coco_json: dict) -> None:
    data = json.loads(json.dumps(coco_json))
    i, im, ann = _first_ann_image(data)
    ann["category_id"] = 999
    root = _copy_with(tmp_path, coco_dir, data)
    ds = CocoDataset(root, "x", ann_file="annotations.json", img_dir="images",
                     skip_invalid=True)
    with pytest.warns(UserWarning, match=f"skipping invalid sample {i}: .*category_id 999"):
        s = ds[i]
    assert s["image_id"] == data["images"][i + 1]["id"] and ds.num_skipped == 1


def test_derive_cls_is_multi_label_of_the_categories_present(coco_dir: Path,
                                                              coco_json: dict) -> None:
    ds = _open(coco_dir, derive_cls=True, tasks=["cls"])
    assert ds.tasks == ["cls"] and ds.multi_label and ds.cls_classes == ds.det_classes
    for i, im in enumerate(coco_json["images"]):
        present = {a["category_id"] for a in coco_json["annotations"] if a["image_id"] == im["id"]}
        target = ds[i]["targets"]["cls"]
        assert target.dtype == torch.float32 and target.shape == (80,)
        assert {ds.cat_ids[k] for k in torch.nonzero(target).flatten().tolist()} == present
