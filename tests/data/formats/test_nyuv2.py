"""The nyuv2 reader on tiny synthetic trees in the MTAN / LibMTL .npy layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtvision.data.formats.nyuv2 import NYUv2Dataset
from mtvision.data.io import DataError

H, W = 3, 4
IMAGE = np.array([[[0.0, 0.5, 1.0], [0.2, 0.4, 0.6], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]] * H,
                 np.float32)
# uint8 of IMAGE: round(255 * v): 0.5 -> 127.5 -> 128, 0.2 -> 51, 0.4 -> 102, 0.6 -> 153
IMAGE_U8 = np.array([[[0, 128, 255], [51, 102, 153], [255, 255, 255], [0, 0, 0]]] * H)
LABEL = np.array([[0, 1, 12, -1], [3, -1, 5, 6], [7, 8, 9, 10]], np.float32)
SEG = np.array([[0, 1, 12, 255], [3, 255, 5, 6], [7, 8, 9, 10]])
DEPTH = np.array([[1.5, 0.0, 2.25, 3.0], [0.5, 0.5, 0.0, 9.75], [1.0, 2.0, 3.0, 4.0]], np.float32)
NORMALS = np.zeros((H, W, 3), np.float32)
NORMALS[0, 0] = (0.0, 0.0, 1.0)
NORMALS[1, 2] = (-0.6, 0.8, 0.0)


def make_nyu(root: Path, split: str = "val", n: int = 3,
             folders: tuple[str, ...] = ("label", "depth", "normal")) -> Path:
    """Samples 0..n-1; sample i has the image and labels above, depth scaled by (i + 1)."""
    for sub in ("image", *folders):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / split / "image" / f"{i}.npy", IMAGE)
        if "label" in folders:
            np.save(root / split / "label" / f"{i}.npy", LABEL)
        if "depth" in folders:
            np.save(root / split / "depth" / f"{i}.npy", (DEPTH * (i + 1))[..., None])
        if "normal" in folders:
            np.save(root / split / "normal" / f"{i}.npy", NORMALS)
    return root


def test_reads_all_tasks(tmp_path: Path) -> None:
    ds = NYUv2Dataset(make_nyu(tmp_path, n=12), "val")
    assert len(ds) == 12
    assert ds.tasks == ["seg", "depth", "normals"]
    assert ds.seg_classes == ["bed", "books", "ceiling", "chair", "floor", "furniture",
                              "objects", "painting", "sofa", "table", "tv", "wall", "window"]
    # numeric order, not name order (which would put 10 and 11 after 1)
    assert [ds.read(i).image_id for i in range(12)] == list(range(12))
    raw = ds.read(2)
    assert raw.file_name == "2.npy"
    assert raw.image.dtype == np.uint8
    np.testing.assert_array_equal(raw.image, IMAGE_U8)
    assert raw.seg.dtype == np.uint8
    np.testing.assert_array_equal(raw.seg, SEG)
    assert raw.depth.dtype == np.float32 and raw.depth.shape == (H, W)
    np.testing.assert_array_equal(raw.depth, DEPTH * 3)
    assert raw.normals.dtype == np.float32
    np.testing.assert_array_equal(raw.normals, NORMALS)


def test_getitem_targets(tmp_path: Path) -> None:
    ds = NYUv2Dataset(make_nyu(tmp_path), "val")
    sample = ds[0]
    t = sample["targets"]
    assert set(t) == {"seg", "depth", "normals"}
    np.testing.assert_array_equal(t["seg"].numpy(), SEG)
    np.testing.assert_allclose(t["depth"].numpy(), DEPTH)
    np.testing.assert_allclose(t["normals"].numpy(), NORMALS.transpose(2, 0, 1))
    assert ds.num_classes == {"seg": 13, "depth": 1, "normals": 1}


def test_tasks_follow_the_folders_and_the_option(tmp_path: Path) -> None:
    ds = NYUv2Dataset(make_nyu(tmp_path, folders=("depth",)), "val")
    assert ds.tasks == ["depth"]
    raw = ds.read(1)
    assert raw.seg is None and raw.normals is None
    np.testing.assert_array_equal(raw.depth, DEPTH * 2)
    only = NYUv2Dataset(make_nyu(tmp_path / "all"), "val", tasks=["normals"])
    assert only.tasks == ["normals"]
    assert set(only[0]["targets"]) == {"normals"}
    with pytest.raises(DataError, match=r"cannot feed tasks \['seg'\]"):
        NYUv2Dataset(tmp_path, "val", tasks=["seg"])


def test_edges_derived_from_the_labels(tmp_path: Path) -> None:
    ds = NYUv2Dataset(make_nyu(tmp_path), "val", derive_edges="seg", edge_thickness=1,
                      tasks=["edge"])
    assert ds.tasks == ["edge"]
    edge = ds[0]["targets"]["edge"].numpy()
    assert set(ds[0]["targets"]) == {"edge"}
    # thickness 1: the pixel after each label change (right or down) is an edge; -1 (ignore)
    # pixels stay 255 and do not count as a change
    np.testing.assert_array_equal(edge, [[0, 1, 1, 255], [1, 255, 1, 1], [1, 1, 1, 1]])


def test_missing_file_names_it(tmp_path: Path) -> None:
    make_nyu(tmp_path)
    (tmp_path / "val" / "depth" / "1.npy").unlink()
    with pytest.raises(DataError, match=r"val/depth/1\.npy' not found \(1 of 3 images"):
        NYUv2Dataset(tmp_path, "val")


def test_missing_split(tmp_path: Path) -> None:
    make_nyu(tmp_path)
    with pytest.raises(DataError, match=r"train/image' not found"):
        NYUv2Dataset(tmp_path, "train")


@pytest.mark.parametrize("sub, array, pattern", [
    ("label", np.full((H, W), 13.0), r"label '.*0\.npy' has class id 13 out of range 0\.\.12"),
    ("label", np.full((H, W), 0.5), r"label '.*0\.npy' has class id 0\.5 out of range"),
    ("label", np.zeros((H, W + 1)), r"label '.*0\.npy' is 5x3, its image is 4x3"),
    ("depth", np.full((H, W), np.nan), r"depth '.*0\.npy' has non-numeric or non-finite"),
    ("depth", np.full((H, W), -1.0), r"depth '.*0\.npy' has negative values"),
    ("depth", np.zeros((H, W, 2)), r"depth '.*0\.npy' has shape \(3, 4, 2\)"),
    ("normal", np.zeros((H, W)), r"normals '.*0\.npy' have shape \(3, 4\)"),
    ("normal", np.full((H, W, 3), 2.0), r"normals '.*0\.npy' have components outside"),
    ("image", IMAGE * 255, r"image '.*0\.npy' has values outside \[0, 1\]"),
    ("image", IMAGE[..., :2], r"image '.*0\.npy' has shape \(3, 4, 2\), expected HxWx3"),
])
def test_bad_arrays_name_the_file(tmp_path: Path, sub: str, array: np.ndarray,
                                  pattern: str) -> None:
    make_nyu(tmp_path)
    np.save(tmp_path / "val" / sub / "0.npy", array)
    ds = NYUv2Dataset(tmp_path, "val")
    with pytest.raises(DataError, match=pattern):
        ds.read(0)
    ds.read(1)


def test_unreadable_and_pickled_files(tmp_path: Path) -> None:
    make_nyu(tmp_path)
    (tmp_path / "val" / "label" / "0.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "val" / "depth" / "1.npy", np.array([{"a": 1}], dtype=object))
    ds = NYUv2Dataset(tmp_path, "val")
    with pytest.raises(DataError, match=r"label/0\.npy': not a readable \.npy"):
        ds.read(0)
    with pytest.raises(DataError, match=r"depth/1\.npy': not a readable \.npy"):
        ds.read(1)


def test_uint8_images_are_accepted(tmp_path: Path) -> None:
    make_nyu(tmp_path, folders=())
    np.save(tmp_path / "val" / "image" / "0.npy", IMAGE_U8.astype(np.uint8))
    ds = NYUv2Dataset(tmp_path, "val")
    assert ds.tasks == []
    np.testing.assert_array_equal(ds.read(0).image, IMAGE_U8)


def test_cityscapes_mtan_arrays(tmp_path: Path) -> None:
    from mtvision.data.formats.nyuv2 import CITYSCAPES_7_CLASSES, CityscapesMTANDataset

    rng = np.random.default_rng(0)
    for sub in ("image", "label_7", "label_19", "depth"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    for i in range(2):
        np.save(tmp_path / "train" / "image" / f"{i}.npy",
                rng.random((8, 16, 3)).astype(np.float32))
        lab7 = rng.integers(-1, 7, (8, 16)).astype(np.float32)
        np.save(tmp_path / "train" / "label_7" / f"{i}.npy", lab7)
        np.save(tmp_path / "train" / "label_19" / f"{i}.npy",
                rng.integers(-1, 19, (8, 16)).astype(np.float32))
        np.save(tmp_path / "train" / "depth" / f"{i}.npy",
                rng.random((8, 16, 1)).astype(np.float32))
    ds = CityscapesMTANDataset(tmp_path, "train")
    assert ds.tasks == ["seg", "depth"] and tuple(ds.seg_classes) == CITYSCAPES_7_CLASSES
    raw = ds.read(1)
    np.testing.assert_array_equal(raw.seg, np.where(lab7 < 0, 255, lab7).astype(np.uint8))
    assert len(CityscapesMTANDataset(tmp_path, "train", num_classes=19).seg_classes) == 19
    with pytest.raises(DataError, match="num_classes must be 7 or 19"):
        CityscapesMTANDataset(tmp_path, "train", num_classes=8)
