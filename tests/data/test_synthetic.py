"""The synthetic shapes generator: determinism, caching, and exact, consistent labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mtvision.data.io import read_image, read_mask
from mtvision.data.synthetic import (
    SEG_CLASSES,
    SHAPE_CLASSES,
    TEXTURE_CLASSES,
    generate_shapes,
    mask_to_polygons,
)

SMALL = {"num_train": 6, "num_val": 3, "image_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_layout_and_metadata(shapes_root: Path) -> None:
    for split, n in (("train", 6), ("val", 3)):
        data = json.loads((shapes_root / "annotations" / f"{split}.json").read_text())
        assert len(data["images"]) == n
        meta = data["mtvision"]
        assert meta["tasks"] == ["det", "seg", "edge", "cls"]
        assert meta["seg_classes"] == SEG_CLASSES == ["background", *SHAPE_CLASSES]
        assert meta["cls_classes"] == TEXTURE_CLASSES
        assert meta["multi_label"] is False
        assert meta["generator"]["num_train"] == 6 and meta["generator"]["image_size"] == 64
        assert [(c["id"], c["name"]) for c in data["categories"]] == [
            (1, "circle"), (2, "square"), (3, "triangle"), (4, "star")]
        for im in data["images"]:
            assert (shapes_root / "images" / split / im["file_name"]).is_file()
            assert im["file_name"].endswith(".jpg")
            assert im["seg_file"].endswith(".png") and im["edge_file"].endswith(".png")
            assert 0 <= im["cls"] < 4
            assert (im["height"], im["width"]) == (64, 64)
            assert read_image(shapes_root / "images" / split / im["file_name"]).shape == (64, 64, 3)
        per_image = {}
        for a in data["annotations"]:
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
            assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= 4
        assert all(1 <= per_image.get(im["id"], 0) <= 4 for im in data["images"])


def test_deterministic(tmp_path: Path, shapes_root: Path) -> None:
    again = generate_shapes(tmp_path / "again", **SMALL)
    assert _files(again) == _files(shapes_root)
    other = generate_shapes(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (other / "images/train/000000.jpg").read_bytes() != (
        shapes_root / "images/train/000000.jpg").read_bytes()


def test_cache_and_regeneration(tmp_path: Path) -> None:
    root = generate_shapes(tmp_path / "c", **SMALL)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:  # make any rewrite visible even on coarse-mtime filesystems
        os.utime(p, ns=(0, 0))
    assert generate_shapes(root, **SMALL) == root
    assert all(p.stat().st_mtime_ns == 0 for p in files)

    # An interrupted run (annotation file missing) is regenerated, as is one with other params.
    (root / "annotations/val.json").unlink()
    generate_shapes(root, **SMALL)
    assert (root / "annotations/val.json").is_file()
    assert all(p.stat().st_mtime_ns > 0 for p in files)

    generate_shapes(root, **{**SMALL, "num_train": 4})
    data = json.loads((root / "annotations/train.json").read_text())
    assert data["mtvision"]["generator"]["num_train"] == 4 and len(data["images"]) == 4
    assert not (root / "images/train/000005.jpg").exists()  # stale files removed

    for p in root.rglob("*.jpg"):
        os.utime(p, ns=(0, 0))
    generate_shapes(root, **{**SMALL, "num_train": 4}, overwrite=True)
    assert all(p.stat().st_mtime_ns > 0 for p in root.rglob("*.jpg"))
    assert not list(root.rglob("*.tmp"))


def test_labels_are_consistent(shapes_root: Path) -> None:
    kernel = np.ones((3, 3), np.uint8)
    for split in ("train", "val"):
        coco = COCO(str(shapes_root / "annotations" / f"{split}.json"))
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            image = read_image(shapes_root / "images" / split / info["file_name"]).astype(float)
            semseg = read_mask(shapes_root / info["seg_file"])
            edges = read_mask(shapes_root / info["edge_file"]) >= 128
            expected_seg = np.zeros_like(semseg)
            expected_edges = np.zeros_like(edges)
            near_objects = np.zeros(semseg.shape, np.uint8)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                m = coco.annToMask(ann)
                assert (expected_seg[m > 0] == 0).all(), "instances overlap"
                expected_seg[m > 0] = ann["category_id"]
                expected_edges |= (m > 0) & (cv2.erode(m, kernel) == 0)
                near_objects |= cv2.dilate(m, kernel)
                # The box is tight around the mask pycocotools decodes from the polygon.
                ys, xs = np.nonzero(m)
                x0, y0 = xs.min(), ys.min()
                assert ann["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
                assert ann["area"] == int(m.sum())
                # Shapes stand out from the background right around them.
                inner = cv2.erode(m, kernel, iterations=2) > 0
                ring = (cv2.dilate(m, kernel, iterations=3) > 0) & ~(
                    cv2.dilate(m, kernel, iterations=1) > 0)
                if inner.sum() >= 4:
                    diff = np.abs(image[inner].mean(0) - image[ring].mean(0)).sum()
                    assert diff > 40, (info["file_name"], ann["id"], diff)
            # Semantic mask = union of the instances with their categories.
            np.testing.assert_array_equal(semseg, expected_seg)
            # Edges are exactly the instance pixels touching the outside: never texture edges.
            np.testing.assert_array_equal(edges, expected_edges)
            assert not (edges & (near_objects == 0)).any()


def test_classes_and_categories_all_occur(tmp_path: Path) -> None:
    root = generate_shapes(tmp_path / "many", num_train=40, num_val=0, image_size=64, seed=3)
    data = json.loads((root / "annotations/train.json").read_text())
    assert {im["cls"] for im in data["images"]} == {0, 1, 2, 3}
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3, 4}
    assert json.loads((root / "annotations/val.json").read_text())["images"] == []


def test_mask_to_polygons_is_exact() -> None:
    from pycocotools import mask as mask_utils

    # A random star-shaped polygon (no holes), drawn with sub-pixel vertices.
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 2 * np.pi, 24))
    r = rng.uniform(4, 18, 24)
    pts = np.stack([25 + r * np.cos(a), 20 + r * np.sin(a)], 1)
    m = np.zeros((40, 50), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    rle = mask_utils.merge(mask_utils.frPyObjects(mask_to_polygons(m), 40, 50))
    np.testing.assert_array_equal(mask_utils.decode(rle), m)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes(tmp_path, num_train=1, num_val=1, image_size=16)
    with pytest.raises(ValueError, match="num_train"):
        generate_shapes(tmp_path, num_train=-1)
