"""The camvid reader (SegNet layout) on a synthetic tree and on the shared real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mtvision.data.formats.camvid import CamVidDataset
from mtvision.data.io import DataError

ANNOT = np.array([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [11, 11, 3, 3, 3, 3]], np.uint8)
SEG = np.array([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 255], [255, 255, 3, 3, 3, 3]])


def make_camvid(root: Path, split: str = "train", names: tuple[str, ...] = ("b", "a")) -> Path:
    """ROOT/CamVid/SPLIT/*.png with SPLITannot/*.png (3x6 frames, the ANNOT map)."""
    rng = np.random.default_rng(0)
    for sub in (split, f"{split}annot"):
        (root / "CamVid" / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        assert cv2.imwrite(str(root / "CamVid" / split / f"{name}.png"),
                           rng.integers(0, 256, (3, 6, 3), dtype=np.uint8))
        assert cv2.imwrite(str(root / "CamVid" / f"{split}annot" / f"{name}.png"), ANNOT)
    return root


@pytest.mark.parametrize("sub", ["", "CamVid"])
def test_reads_frames_and_maps_void(tmp_path: Path, sub: str) -> None:
    make_camvid(tmp_path)
    ds = CamVidDataset(tmp_path / sub, "train")
    assert len(ds) == 2
    assert ds.tasks == ["seg"]
    assert ds.seg_classes == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                              "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]
    raw = ds.read(0)
    assert raw.file_name == "a.png"
    bgr = cv2.imread(str(tmp_path / "CamVid/train/a.png"))
    np.testing.assert_array_equal(raw.image, bgr[:, :, ::-1])
    assert raw.seg.dtype == np.uint8
    np.testing.assert_array_equal(raw.seg, SEG)
    sample = ds[1]
    np.testing.assert_array_equal(sample["targets"]["seg"].numpy(), SEG)
    assert ds.num_classes == {"seg": 11}


def test_edges_derived_from_the_map(tmp_path: Path) -> None:
    ds = CamVidDataset(make_camvid(tmp_path), "train", derive_edges="seg")
    assert ds.tasks == ["seg", "edge"]
    assert set(ds[0]["targets"]) == {"seg", "edge"}


def test_missing_annotation_names_the_frame(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    (tmp_path / "CamVid/trainannot/b.png").unlink()
    with pytest.raises(DataError, match=r"frame '.*train/b\.png' has no annotation"):
        CamVidDataset(tmp_path, "train")


@pytest.mark.parametrize("annot, pattern", [
    (np.full((3, 6), 12, np.uint8), r"annot/a\.png' has class id 12 out of range 0\.\.10"),
    (np.zeros((4, 6), np.uint8), r"annot/a\.png' is 6x4, its frame is 6x3"),
    (np.dstack([ANNOT, ANNOT + 1, ANNOT]), r"annot/a\.png'.*different channels"),
])
def test_bad_annotation_names_the_file(tmp_path: Path, annot: np.ndarray, pattern: str) -> None:
    make_camvid(tmp_path)
    assert cv2.imwrite(str(tmp_path / "CamVid/trainannot/a.png"), annot)
    ds = CamVidDataset(tmp_path, "train")
    with pytest.raises(DataError, match=pattern):
        ds.read(0)
    ds.read(1)


def test_missing_folders(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    with pytest.raises(DataError, match=r"CamVid split 'val': neither"):
        CamVidDataset(tmp_path, "val")
    (tmp_path / "CamVid/val").mkdir()
    with pytest.raises(DataError, match=r"annotation folder '.*valannot' not found"):
        CamVidDataset(tmp_path, "val")


def test_real_camvid_test_frames(shared_data: Path) -> None:
    root = shared_data / "camvid"
    annot_dir = root / "CamVid" / "testannot"
    files = sorted(annot_dir.glob("*.png"))
    ds = CamVidDataset(root, "test")
    assert len(ds) == len(files) == 20
    ids_in_files: set[int] = set()
    ids_read: set[int] = set()
    for i in range(len(ds)):
        m = cv2.imread(str(annot_dir / ds.images[i].name), cv2.IMREAD_UNCHANGED)
        ids_in_files |= set(np.unique(m).tolist())
        raw = ds.read(i)
        assert raw.image.shape == (360, 480, 3)
        np.testing.assert_array_equal(raw.seg, np.where(m == 11, 255, m))
        ids_read |= set(np.unique(raw.seg).tolist())
    assert ids_in_files == set(range(12))  # all 11 classes and void
    assert ids_read == set(range(11)) | {255}
