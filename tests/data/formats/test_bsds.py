"""The bsds500 reader: BSR layout, annotator maps, merged edge targets, errors, real files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from mtvision.data.formats.bsds import BSDS500Dataset
from mtvision.data.io import DataError
from mtvision.registry import DATASETS

# One 4x5 image, four annotators. Pixel counts of annotators drawing a boundary:
#   row 0: 0 0 0 0 1 / row 1: 2 2 2 1 2 / rows 2-3: 0 0 0 0 1
B4 = [np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
      np.array([[0, 0, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
      np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]),
      np.zeros((4, 5), int)]
# mean, threshold 0.3: 2/4 -> edge, 1/4 -> ignored (255), 0 -> not an edge
MEAN4 = np.array([[0, 0, 0, 0, 255], [1, 1, 1, 255, 1], [0, 0, 0, 0, 255], [0, 0, 0, 0, 255]])
UNION4 = np.array([[0, 0, 0, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]])


def write_gt(path: Path, boundaries: list[np.ndarray], seg_shape: tuple[int, int] | None = None,
             fields: tuple[str, ...] = ("Segmentation", "Boundaries")) -> None:
    """A BSR-style ground truth: ``groundTruth`` is a 1xK cell of 1x1 structs."""
    cell = np.empty((1, len(boundaries)), dtype=object)
    for k, b in enumerate(boundaries):
        s = np.empty((1, 1), dtype=[(f, "O") for f in fields])
        for f in fields:
            s[0, 0][f] = (np.full(seg_shape or b.shape, k + 1, np.uint16) if f == "Segmentation"
                          else np.asarray(b).astype(np.uint8))
        cell[0, k] = s
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"groundTruth": cell})


def write_image(path: Path, hw: tuple[int, int], seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))


def make_bsds(root: Path, split: str = "test") -> Path:
    """ROOT/BSDS500/data with three images: 4 annotators, 2 annotators, 1 annotator."""
    data = root / "BSDS500" / "data"
    two = [np.eye(4, 5, dtype=int), np.zeros((4, 5), int)]
    for name, maps in (("2018", B4), ("3063", two), ("100075", [np.eye(4, 5, dtype=int)])):
        write_image(data / "images" / split / f"{name}.jpg", (4, 5), seed=int(name))
        write_gt(data / "groundTruth" / split / f"{name}.mat", maps)
    (data / "images" / split / "Thumbs.db").write_bytes(b"not an image")  # shipped in BSR
    return root


def check_bsr_structure(mat_path: Path) -> int:
    """Assert ``mat_path`` has the BSR ground-truth structure; return its annotator count."""
    gt = scipy.io.loadmat(str(mat_path))["groundTruth"]
    assert gt.dtype == object and gt.ndim == 2 and gt.shape[0] == 1
    for entry in gt.ravel():
        assert entry.shape == (1, 1)
        assert set(entry.dtype.names) == {"Segmentation", "Boundaries"}
        seg, bnd = entry["Segmentation"][0, 0], entry["Boundaries"][0, 0]
        assert seg.dtype == np.uint16 and bnd.dtype == np.uint8
        assert seg.ndim == 2 and seg.shape == bnd.shape
    return gt.shape[1]


def test_synthetic_mat_has_the_bsr_structure(tmp_path: Path) -> None:
    write_gt(tmp_path / "x.mat", B4)
    assert check_bsr_structure(tmp_path / "x.mat") == 4


@pytest.mark.parametrize("sub", ["", "BSDS500", "BSDS500/data"])
def test_reads_annotators_and_mean_target(tmp_path: Path, sub: str) -> None:
    make_bsds(tmp_path)
    ds = BSDS500Dataset(tmp_path / sub, "test")
    assert len(ds) == 3
    assert ds.tasks == ["edge"]
    names = [p.name for p in ds.images]
    assert names == ["100075.jpg", "2018.jpg", "3063.jpg"]  # sorted by name, Thumbs.db ignored
    raw = ds.read(names.index("2018.jpg"))
    assert raw.image_id == 2018 and raw.file_name == "2018.jpg"
    assert raw.image.shape == (4, 5, 3) and raw.image.dtype == np.uint8
    assert len(raw.edge_annotators) == 4
    for got, want in zip(raw.edge_annotators, B4, strict=True):
        assert got.dtype == bool
        np.testing.assert_array_equal(got, want.astype(bool))
    np.testing.assert_array_equal(raw.edge, MEAN4)


def test_union_mode_and_threshold(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    union = BSDS500Dataset(tmp_path, "test", edge_mode="union")
    np.testing.assert_array_equal(union.read(1).edge, UNION4)
    # threshold 0.25: one annotator of four is enough
    low = BSDS500Dataset(tmp_path, "test", edge_threshold=0.25)
    np.testing.assert_array_equal(low.read(1).edge, UNION4)
    # threshold 0.6: two of four is not enough any more, so every marked pixel is ignored
    high = BSDS500Dataset(tmp_path, "test", edge_threshold=0.6)
    np.testing.assert_array_equal(high.read(1).edge, np.where(UNION4 == 1, 255, 0))


def test_getitem_gives_target_and_full_resolution_annotators(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    ds = DATASETS.build({"name": "bsds500", "root": str(tmp_path), "split": "test",
                         "edge_mode": "mean", "edge_threshold": 0.3}, "data")
    sample = ds[1]
    assert sample["image_id"] == 2018
    assert tuple(sample["image"].shape) == (3, 4, 5)
    np.testing.assert_array_equal(sample["targets"]["edge"].numpy(), MEAN4)
    assert len(sample["edge_gts"]) == 4
    assert ds.num_classes == {"edge": 1}


def test_missing_ground_truth_names_the_image(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    (tmp_path / "BSDS500/data/groundTruth/test/3063.mat").unlink()
    with pytest.raises(DataError, match=r"3063\.jpg.*no ground truth.*3063\.mat"):
        BSDS500Dataset(tmp_path, "test")


@pytest.mark.parametrize("case, pattern", [
    ("no_variable", r"3063\.mat' has no 'groundTruth'"),
    ("no_boundaries", r"3063\.mat': annotator 0 is not a struct with a 'Boundaries'"),
    ("size", r"3063\.mat': annotator 0 boundaries are 6x4, the image is 5x4"),
    ("corrupt", r"3063\.mat': not a readable \.mat"),
    ("empty_cell", r"3063\.mat' has no annotators"),
])
def test_malformed_mat_names_the_file(tmp_path: Path, case: str, pattern: str) -> None:
    make_bsds(tmp_path)
    mat = tmp_path / "BSDS500/data/groundTruth/test/3063.mat"
    if case == "no_variable":
        scipy.io.savemat(str(mat), {"gt": np.zeros((4, 5))})
    elif case == "no_boundaries":
        write_gt(mat, [np.zeros((4, 5))], fields=("Segmentation",))
    elif case == "size":
        write_gt(mat, [np.zeros((4, 6))])
    elif case == "corrupt":
        mat.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 7)
    else:
        scipy.io.savemat(str(mat), {"groundTruth": np.empty((1, 0), dtype=object)})
    ds = BSDS500Dataset(tmp_path, "test")
    with pytest.raises(DataError, match=pattern):
        ds.read(2)
    ds.read(0)  # the other samples still read


def test_corrupt_image_is_skipped_when_asked(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    (tmp_path / "BSDS500/data/images/test/3063.jpg").write_bytes(b"\xff\xd8 broken")
    ds = BSDS500Dataset(tmp_path, "test", skip_invalid=True)
    with pytest.warns(UserWarning, match=r"3063\.jpg"):
        sample = ds[2]
    assert sample["image_id"] == 100075 and ds.num_skipped == 1


@pytest.mark.parametrize("kwargs, pattern", [
    ({"split": "val"}, r"images/val' not found"),
    ({"edge_mode": "max"}, r"edge_mode must be one of"),
    ({"edge_threshold": 0.0}, r"edge_threshold must be in \(0, 1\]"),
    ({"tasks": ["seg"]}, r"cannot feed tasks \['seg'\]"),
])
def test_bad_options_and_layout(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    make_bsds(tmp_path)
    kwargs = {"split": "test", **kwargs}
    with pytest.raises(DataError, match=pattern):
        BSDS500Dataset(tmp_path, **kwargs)


def test_root_without_bsds_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no BSDS500 data under"):
        BSDS500Dataset(tmp_path, "test")


def test_real_bsds500_test_split(shared_data: Path) -> None:
    root = shared_data / "bsds500"
    gt_dir = root / "BSDS500/data/groundTruth/test"
    ds = BSDS500Dataset(root, "test")
    assert len(ds) == 100
    assert len(list(gt_dir.glob("*.mat"))) == 100
    counts = []
    for i in range(len(ds)):
        mat = gt_dir / f"{ds.images[i].stem}.mat"
        gt = scipy.io.loadmat(str(mat))["groundTruth"]
        raw = ds.read(i)
        assert raw.image_id == int(ds.images[i].stem)
        assert len(raw.edge_annotators) == gt.shape[1]
        counts.append(gt.shape[1])
        if i == 0:
            # the merged target, recomputed from the .mat with numpy
            stack = np.stack([gt[0, k]["Boundaries"][0, 0] != 0 for k in range(gt.shape[1])])
            frac = stack.sum(0) / len(stack)
            want = np.where(frac >= 0.3, 1, np.where(frac == 0, 0, 255))
            np.testing.assert_array_equal(raw.edge, want)
            assert raw.image.shape[:2] == stack.shape[1:]
    assert min(counts) == 4 and max(counts) == 8
    assert sum(counts) == 533
    assert check_bsr_structure(gt_dir / f"{ds.images[0].stem}.mat") == counts[0]
