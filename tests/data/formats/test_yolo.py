"""The ``yolo`` reader: exact counts on coco128-seg, masks against pycocotools, data.yaml
variants, hand-computed boxes and one-line messages for every kind of bad label line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from mtvision.data.formats.yolo import YoloDataset, label_path
from mtvision.data.io import DataError
from mtvision.registry import DATASETS


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _names(root: Path) -> list[str]:
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    return [names[i] for i in range(len(names))] if isinstance(names, dict) else names


def test_repo_subset_exact_counts(samples_dir: Path) -> None:
    root = samples_dir / "coco128-seg"
    images = sorted((root / "images" / "train2017").glob("*.jpg"))
    labelled = [p for p in images if (root / "labels" / "train2017" / f"{p.stem}.txt").exists()]
    lines = [ln for p in labelled for ln in _lines(root / "labels/train2017" / f"{p.stem}.txt")]
    assert (len(images), len(labelled), len(lines)) == (14, 12, 54)
    assert len({ln[0] for ln in lines}) == 18
    ds = DATASETS.build({"name": "yolo", "root": str(root), "split": "val"})
    assert isinstance(ds, YoloDataset) and len(ds) == len(images)
    assert ds.det_classes == _names(root) and ds.cat_ids == list(range(1, 81))
    # COCO file names: the image ids are the numbers in them.
    assert ds.image_ids == [int(p.stem) for p in images]
    n = 0
    for i, img in enumerate(images):
        raw = ds.read(i)
        assert raw.file_name == img.name and raw.image_id == int(img.stem)
        h, w = cv2.imread(str(img)).shape[:2]
        assert raw.hw == (h, w)
        want = _lines(label_path(img)) if img in labelled else []
        assert raw.labels.tolist() == [int(ln[0]) for ln in want]
        for box, ln in zip(raw.boxes, want, strict=True):
            pts = np.array(ln[1:], np.float64).reshape(-1, 2) * [w, h]
            np.testing.assert_allclose(box, [*pts.min(0), *pts.max(0)], atol=1e-3)
        n += len(raw.boxes)
    assert n == len(lines)


def test_full_shared_folder_exact_counts(shared_data: Path, samples_dir: Path,
                                         tmp_path: Path) -> None:
    src = shared_data / "coco128-seg"
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(
        {"path": str(src), "train": "images/train2017", "names": _names(samples_dir /
                                                                        "coco128-seg")}))
    ds = YoloDataset(tmp_path, "train")
    label_files = sorted((src / "labels" / "train2017").glob("*.txt"))
    lines = [ln for p in label_files for ln in _lines(p)]
    assert (len(ds), len(label_files), len(lines)) == (96, 94, 704)
    labels = np.concatenate([ds.read(i).labels for i in range(len(ds))])
    assert sorted(labels.tolist()) == sorted(int(ln[0]) for ln in lines)
    assert len(set(labels.tolist())) == len({ln[0] for ln in lines}) == 69


def test_instance_masks_equal_pycocotools(samples_dir: Path) -> None:
    root = samples_dir / "coco128-seg"
    ds = YoloDataset(root, "train", instance_masks=True)
    for i in (0, 6, 12):  # a crowded image, a tall one, a background one
        raw = ds.read(i)
        h, w = raw.hw
        lines = _lines(label_path(ds.images[i])) if label_path(ds.images[i]).exists() else []
        assert raw.instance_masks.shape == (len(lines), h, w)
        for m, ln in zip(raw.instance_masks, lines, strict=True):
            poly = (np.array(ln[1:], np.float64).reshape(-1, 2) * [w, h]).reshape(-1).tolist()
            ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))
            assert (m == ref).all()


# ----------------------------------------------------------------------------------------------
# Layouts


def _image(path: Path, h: int = 40, w: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _label(img: Path, text: str) -> Path:
    p = label_path(img)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_no_yaml_names_option_box_and_polygon(tmp_path: Path) -> None:
    img = tmp_path / "images" / "train" / "a.png"
    _image(img)
    # 50x40 image. Box: centre (25, 20), size (10, 16) -> [20, 12, 30, 28]. Polygon (0.1, 0.1),
    # (0.3, 0.1), (0.3, 0.5) -> (5, 4), (15, 4), (15, 20): box [5, 4, 15, 20].
    _label(img, "0 0.5 0.5 0.2 0.4\n\n   \n1 0.1 0.1 0.3 0.1 0.3 0.5\n")
    ds = YoloDataset(tmp_path, "train", names={0: "a", 1: "b"})
    assert ds.det_classes == ["a", "b"] and len(ds) == 1
    raw = ds.read(0)
    np.testing.assert_allclose(raw.boxes, [[20, 12, 30, 28], [5, 4, 15, 20]], atol=1e-5)
    assert raw.labels.tolist() == [0, 1] and raw.image_id == 1  # "a" is not a number
    with pytest.raises(DataError) as info:
        YoloDataset(tmp_path, "val", names=["a", "b"])
    assert str(info.value) == (f"YOLO dataset '{tmp_path}' (no data.yaml): image folder "
                               f"'{tmp_path}/images/val' not found")
    with pytest.raises(DataError) as info:
        YoloDataset(tmp_path, "train")
    assert str(info.value) == (f"YOLO dataset '{tmp_path}': '{tmp_path}/data.yaml' not found "
                               "(or give the class names with the option 'names')")


def test_yaml_path_txt_list_and_names_dict(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("x1.jpg", "x2.jpg", "x3.jpg"):
        _image(data / "images" / "all" / name)
    _label(data / "images" / "all" / "x2.jpg", "2 0.5 0.5 0.5 0.5\n")
    (data / "val.txt").write_text("./images/all/x2.jpg\nimages/all/x3.jpg\n\n")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "coco.yaml").write_text(yaml.safe_dump(
        {"path": "../data", "train": "images/all", "val": "val.txt", "nc": 3,
         "names": {0: "p", 1: "q", 2: "r"}}))
    ds = YoloDataset(tmp_path, "val", data_yaml="cfg/coco.yaml")
    assert len(ds) == 2 and ds.det_classes == ["p", "q", "r"]
    assert [ds.read(i).labels.tolist() for i in range(2)] == [[2], []]
    assert len(YoloDataset(tmp_path, "train", data_yaml="cfg/coco.yaml")) == 3

    where = f"dataset file '{cfg / 'coco.yaml'}'"
    with pytest.raises(DataError) as info:
        YoloDataset(tmp_path, "test", data_yaml="cfg/coco.yaml")
    assert str(info.value) == f"{where} has no split 'test' (it has: train, val)"
    (cfg / "coco.yaml").write_text(yaml.safe_dump({"train": "images", "nc": 4, "names": ["a"]}))
    with pytest.raises(DataError) as info:
        YoloDataset(tmp_path, "train", data_yaml="cfg/coco.yaml")
    assert str(info.value) == f"{where}: 'nc' is 4 but 'names' has 1 classes"
    (cfg / "coco.yaml").write_text("names: [a\ntrain: x\n")
    with pytest.raises(DataError) as info:
        YoloDataset(tmp_path, "train", data_yaml="cfg/coco.yaml")
    assert str(info.value).startswith(f"cannot read dataset file '{cfg / 'coco.yaml'}': ")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# Bad label lines and images


@pytest.mark.parametrize("text, problem", [
    ("2 0.5 0.5 0.2 0.2", "class id 2 out of range 0..1"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 out of range 0..1"),
    ("0.5 0.5 0.5 0.2 0.2", "class id 0.5 is not an integer"),
    ("0 0.5 0.5 0.2", "odd number of coordinates (3); expected x y pairs"),
    ("0 0.1 0.1", "2 coordinates; expected a box (cx cy w h) or a polygon (3 or more x y "
                  "points)"),
    ("1 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),
    ("1 0.5 nan 0.2 0.2", "non-finite value"),
    ("0 0.5 0.5 1.2 0.2", "coordinate 1.2 outside [0, 1] (coordinates must be normalised by "
                          "the image size)"),
    ("0 0.5 0.5 0 0.2", "box width and height must be > 0"),
    ("0 0.1 0.2 0.5 0.2 0.9 0.2", "polygon has zero width or height"),
])
def test_bad_label_line_messages(tmp_path: Path, text: str, problem: str) -> None:
    img = tmp_path / "images" / "train" / "a.jpg"
    _image(img)
    label = _label(img, f"0 0.5 0.5 0.2 0.2\n\n{text}\n")
    ds = YoloDataset(tmp_path, "train", names=["cat", "dog"])
    with pytest.raises(DataError) as info:
        ds[0]
    assert str(info.value) == f"label file '{label}' line 3: {problem}"


def test_small_overshoot_is_clipped(tmp_path: Path) -> None:
    img = tmp_path / "images" / "train" / "a.jpg"
    _image(img)  # 50x40
    _label(img, "0 1.005 0.5 0.5 0.5 0.75 0.0 -0.004 0.0\n")
    raw = YoloDataset(tmp_path, "train", names=["x"]).read(0)
    np.testing.assert_allclose(raw.boxes, [[0, 0, 50, 20]], atol=1e-5)


def test_box_line_cannot_give_a_mask(tmp_path: Path) -> None:
    img = tmp_path / "images" / "train" / "a.jpg"
    _image(img)
    label = _label(img, "0 0.1 0.1 0.3 0.1 0.3 0.5\n0 0.5 0.5 0.2 0.2\n")
    assert len(YoloDataset(tmp_path, "train", names=["x"])[0]["targets"]["det"]["boxes"]) == 2
    ds = YoloDataset(tmp_path, "train", names=["x"], derive_seg=True)
    with pytest.raises(DataError) as info:
        ds[0]
    assert str(info.value) == (f"label file '{label}' line 2: a box, but instance masks need "
                               "polygon lines")


def test_corrupt_image_and_skip_invalid(tmp_path: Path) -> None:
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        _image(tmp_path / "images" / "train" / name)
    bad = tmp_path / "images" / "train" / "2.jpg"
    bad.write_bytes(b"garbage" * 30)
    ds = YoloDataset(tmp_path, "train", names=["x"])
    with pytest.raises(DataError) as info:
        ds[1]
    assert str(info.value) == (f"cannot read image '{bad}': not a decodable image (corrupt or "
                               "unsupported)")
    _label(tmp_path / "images" / "train" / "3.jpg", "7 0.5 0.5 0.1 0.1\n")
    ds = YoloDataset(tmp_path, "train", names=["x"], skip_invalid=True)
    with pytest.warns(UserWarning, match=r"skipping invalid sample 1: .*2\.jpg"):
        with pytest.warns(UserWarning, match=r"skipping invalid sample 2: .*3\.txt' line 1"):
            s = ds[1]
    assert s["image_id"] == 1 and ds.num_skipped == 2
