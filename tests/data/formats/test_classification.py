"""The image_folder and image_csv readers on small synthetic trees."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtvision.data.formats.classification import ImageCSVDataset, ImageFolderDataset
from mtvision.data.io import DataError
from mtvision.registry import DATASETS


def write_image(path: Path, value: int) -> None:
    """A 4x6 image of one grey value, so a test can tell which file was read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((4, 6, 3), value, np.uint8))


def make_folders(root: Path) -> Path:
    """train/: dog (2 images, one in a sub-folder), cat (1), bird (1 .PNG); stray files."""
    write_image(root / "train/dog/d1.png", 10)
    write_image(root / "train/dog/more/d2.jpg", 20)
    write_image(root / "train/cat/c1.png", 30)
    write_image(root / "train/bird/b1.PNG", 40)
    (root / "train/cat/notes.txt").write_text("not an image")
    write_image(root / "train/cat/.hidden.png", 99)
    return root


def test_image_folder_classes_and_labels(tmp_path: Path) -> None:
    ds = ImageFolderDataset(make_folders(tmp_path), "train")
    assert ds.cls_classes == ["bird", "cat", "dog"]
    assert ds.tasks == ["cls"] and not ds.multi_label
    got = [(ds.read(i).file_name, ds.read(i).cls, int(ds.read(i).image[0, 0, 0]))
           for i in range(len(ds))]
    assert got == [("bird/b1.PNG", 0, 40), ("cat/c1.png", 1, 30), ("dog/d1.png", 2, 10),
                   ("dog/more/d2.jpg", 2, 20)]
    sample = ds[3]
    assert sample["targets"]["cls"].dtype == torch.int64
    assert int(sample["targets"]["cls"]) == 2
    assert ds.num_classes == {"cls": 3}


def test_image_folder_fixed_classes(tmp_path: Path) -> None:
    make_folders(tmp_path)
    ds = DATASETS.build({"name": "image_folder", "root": str(tmp_path), "split": "train",
                         "classes": ["dog", "cat", "bird", "fish"]}, "data")
    assert ds.cls_classes == ["dog", "cat", "bird", "fish"]
    assert [ds.read(i).cls for i in range(len(ds))] == [0, 0, 1, 2]
    with pytest.raises(DataError, match=r"folder '.*train/dog' is not among the classes"):
        ImageFolderDataset(tmp_path, "train", classes=["cat", "bird"])
    with pytest.raises(DataError, match=r"names \['cat'\] more than once"):
        ImageFolderDataset(tmp_path, "train", classes=["cat", "bird", "dog", "cat"])


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder '.*val' not found"):
        ImageFolderDataset(make_folders(tmp_path), "val")
    (tmp_path / "val/empty").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images in the class folders"):
        ImageFolderDataset(tmp_path, "val")
    (tmp_path / "train/cat/c1.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolderDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"cat/c1\.png': not a decodable image"):
        ds.read(1)


def make_csv(root: Path, text: str, name: str = "train.csv") -> Path:
    write_image(root / "img/a.png", 1)
    write_image(root / "img/b.jpg", 2)
    write_image(root / "img/sub/c.png", 3)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, encoding="utf-8")
    return root


def test_image_csv_single_label(tmp_path: Path) -> None:
    make_csv(tmp_path, "id,image,labels\n1,img/a.png,zebra\n2,img/b.jpg, ant \n\n"
                       "3,img/sub/c.png,zebra\n")
    ds = ImageCSVDataset(tmp_path, "train")
    assert ds.cls_classes == ["ant", "zebra"] and not ds.multi_label
    assert [(ds.read(i).file_name, ds.read(i).cls) for i in range(len(ds))] == [
        ("img/a.png", 1), ("img/b.jpg", 0), ("img/sub/c.png", 1)]
    assert int(ds.read(2).image[0, 0, 0]) == 3
    assert int(ds[1]["targets"]["cls"]) == 0


def test_image_csv_multi_label_from_rows(tmp_path: Path) -> None:
    # a byte-order mark and quoted fields, as spreadsheet programs write them
    make_csv(tmp_path, "\ufeffimage,labels\nimg/a.png,car;person\nimg/b.jpg,tree\n"
                       "\"img/sub/c.png\",\"person;tree;person\"\n")
    ds = ImageCSVDataset(tmp_path, "train")
    assert ds.multi_label and ds.cls_classes == ["car", "person", "tree"]
    assert [ds.read(i).cls for i in range(3)] == [[0, 1], [2], [1, 2]]
    np.testing.assert_array_equal(ds[0]["targets"]["cls"].numpy(), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(ds[1]["targets"]["cls"].numpy(), [0.0, 0.0, 1.0])


def test_image_csv_options(tmp_path: Path) -> None:
    make_csv(tmp_path, "labels,image\ncat|dog,a.png\ncat,sub/c.png\n", name="lists/all.csv")
    ds = DATASETS.build({"name": "image_csv", "root": str(tmp_path), "split": "train",
                         "csv_file": "lists/all.csv", "images_dir": "img", "label_sep": "|",
                         "classes": ["dog", "cat", "cow"]}, "data")
    assert ds.cls_classes == ["dog", "cat", "cow"] and ds.multi_label
    assert [ds.read(i).cls for i in range(2)] == [[0, 1], [1]]
    single = ImageCSVDataset(tmp_path, "x", csv_file="lists/all.csv", images_dir="img",
                             multi_label=True)
    # with ";" the first row's "cat|dog" is one (odd) name; multi_label still gives lists
    assert single.cls_classes == ["cat", "cat|dog"]
    assert [single.read(i).cls for i in range(2)] == [[1], [0]]


@pytest.mark.parametrize("text, kwargs, pattern", [
    ("image,labels\nimg/a.png,cat\nimg/b.jpg,\n", {}, r"train\.csv' line 3: empty label"),
    ("image,labels\nimg/a.png,cat\nimg/x.png,cat\n", {},
     r"train\.csv' line 3: image '.*img/x\.png' not found"),
    ("image,labels\nimg/a.png,cat\nimg/b.jpg,cow\n", {"classes": ["cat", "dog"]},
     r"train\.csv' line 3: unknown class 'cow'"),
    ("image,label\nimg/a.png,cat\n", {}, r"train\.csv': header has no column 'labels'"),
    ("image,labels\n", {}, r"train\.csv': no data rows"),
    ("", {}, r"train\.csv': empty file"),
    ("image,labels\n,cat\n", {}, r"train\.csv' line 2: empty image path"),
    ("id,image,labels\n1,img/a.png\n", {}, r"train\.csv' line 2: 2 columns, the header has 3"),
    ("image,labels\nimg/a.png,cat\n", {"label_sep": ""}, r"'label_sep' must not be empty"),
])
def test_image_csv_errors_name_the_line(tmp_path: Path, text: str, kwargs: dict,
                                        pattern: str) -> None:
    make_csv(tmp_path, text)
    with pytest.raises(DataError, match=pattern):
        ImageCSVDataset(tmp_path, "train", **kwargs)


def test_image_csv_missing_file_and_corrupt_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"CSV file '.*val\.csv' not found"):
        ImageCSVDataset(tmp_path, "val")
    make_csv(tmp_path, "image,labels\nimg/a.png,cat\nimg/b.jpg,dog\n")
    (tmp_path / "img/b.jpg").write_bytes(b"")
    ds = ImageCSVDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"train\.csv' line 3: cannot read image .*empty"):
        ds.read(1)
