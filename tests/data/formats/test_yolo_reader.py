"""The ``yolo`` reader on real coco128-seg files (repo copy and the full shared folder) and on
bad label files. Reference counts come from reading the txt files here."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mtvision.data.formats.yolo import YoloDataset
from mtvision.data.io import DataError


def _label_lines(label_dir: Path) -> list[list[str]]:
    return [line.split() for p in sorted(label_dir.glob("*.txt"))
            for line in p.read_text().splitlines() if line.strip()]


def test_repo_copy_counts(samples_dir: Path) -> None:
    root = samples_dir / "coco128-seg"
    images = sorted((root / "images" / "train2017").glob("*.jpg"))
    lines = _label_lines(root / "labels" / "train2017")
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    ds = YoloDataset(root, "train")
    assert len(ds) == len(images) == 14
    assert ds.det_classes == list(names.values() if isinstance(names, dict) else names)
    assert len(ds.det_classes) == 80 and ds.tasks == ["det"]
    labels = np.concatenate([ds.read(i).labels for i in range(len(ds))])
    assert len(labels) == len(lines)
    assert sorted(labels.tolist()) == sorted(int(parts[0]) for parts in lines)
    # The two background images (no label file) have no objects but are det-labelled.
    empty = [i for i in range(len(ds)) if len(ds.read(i).boxes) == 0]
    assert len(empty) == 2


def test_polygon_box_and_mask_match_the_label_line(samples_dir: Path) -> None:
    root = samples_dir / "coco128-seg"
    ds = YoloDataset(root, "train", instance_masks=True)
    raw = ds.read(0)
    name = Path(raw.file_name).stem
    first = (root / "labels" / "train2017" / f"{name}.txt").read_text().splitlines()[0].split()
    h, w = raw.hw
    pts = np.array(first[1:], np.float64).reshape(-1, 2) * [w, h]
    np.testing.assert_allclose(raw.boxes[0], [*pts.min(0), *pts.max(0)], atol=1e-3)
    # Reference mask: OpenCV's polygon fill; pycocotools rasterises slightly differently at the
    # outline, so compare areas and overlap rather than every pixel.
    ref = np.zeros((h, w), np.uint8)
    cv2.fillPoly(ref, [np.round(pts).astype(np.int32)], 1)
    mask = raw.instance_masks[0].astype(bool)
    inter = (mask & ref.astype(bool)).sum()
    union = (mask | ref.astype(bool)).sum()
    assert inter / union > 0.9


def test_full_shared_coco128_seg(shared_data: Path, samples_dir: Path, tmp_path: Path) -> None:
    src = shared_data / "coco128-seg"
    names = yaml.safe_load((samples_dir / "coco128-seg" / "data.yaml").read_text())["names"]
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(
        {"path": str(src), "train": "images/train2017", "names": names}))
    ds = YoloDataset(tmp_path, "train")
    images = sorted((src / "images" / "train2017").glob("*.jpg"))
    label_files = sorted((src / "labels" / "train2017").glob("*.txt"))
    assert len(ds) == len(images) == 96 and len(label_files) == 94
    lines = _label_lines(src / "labels" / "train2017")
    assert sum(len(ds.read(i).labels) for i in range(len(ds))) == len(lines)


def _tiny(tmp_path: Path, label_text: str) -> Path:
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "a.jpg"), np.zeros((20, 40, 3), np.uint8))
    (tmp_path / "labels" / "train" / "a.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [cat, dog]\n")
    return tmp_path


def test_box_line_in_pixels(tmp_path: Path) -> None:
    ds = YoloDataset(_tiny(tmp_path, "1 0.5 0.5 0.5 0.5\n\n"), "train")
    raw = ds.read(0)
    # Hand-computed: centre (20, 10), size (20, 10) in a 40x20 image.
    np.testing.assert_allclose(raw.boxes, [[10, 5, 30, 15]])
    assert raw.labels.tolist() == [1]


@pytest.mark.parametrize("text, match", [
    ("2 0.5 0.5 0.2 0.2\n", r"a\.txt' line 1: class id 2 out of range 0..1"),
    ("0 0.5 0.5 0.2\n", r"a\.txt' line 1"),
    ("0 0.1 0.1 0.2 0.1 0.3\n", r"a\.txt' line 1"),
    ("0 0.5 0.5 0.2 0.2\n1 x 0.5 0.2 0.2\n", r"a\.txt' line 2"),
])
def test_bad_label_lines(tmp_path: Path, text: str, match: str) -> None:
    ds = YoloDataset(_tiny(tmp_path, text), "train")
    with pytest.raises(DataError, match=match):
        ds[0]


def test_skip_invalid_and_missing_yaml(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "d", "0 0.5 0.5 0.2 0.2\n")
    cv2.imwrite(str(root / "images" / "train" / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    (root / "labels" / "train" / "b.txt").write_text("9 0.5 0.5 0.2 0.2\n")
    ds = YoloDataset(root, "train", skip_invalid=True)
    with pytest.warns(UserWarning, match="skipping invalid sample 1"):
        assert ds[1]["file_name"] == ds[0]["file_name"]
    assert ds.num_skipped == 1
    shutil.rmtree(tmp_path / "d" / "labels")
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match="data.yaml' not found"):
        YoloDataset(root, "train")
