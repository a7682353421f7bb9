"""bsds_to_png: union and mean PNGs of the annotators, checked against numpy on the .mat files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from test_bsds import make_bsds, write_gt, write_image

from mtvision.data.convert.bsds import bsds_to_png
from mtvision.data.io import DataError


def reference(mat: Path) -> tuple[np.ndarray, np.ndarray]:
    """Union and mean maps straight from the .mat file."""
    gt = scipy.io.loadmat(str(mat))["groundTruth"]
    stack = np.stack([gt[0, k]["Boundaries"][0, 0] > 0 for k in range(gt.shape[1])])
    counts = stack.sum(0)
    # (255 * c) / K is exact in float64 when it is a half, so floor(x + 0.5) rounds half up.
    mean = np.floor(255.0 * counts / len(stack) + 0.5).astype(np.uint8)
    return np.where(counts > 0, 255, 0).astype(np.uint8), mean


def read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_union_and_mean_pngs(tmp_path: Path) -> None:
    src = make_bsds(tmp_path / "src")
    summary = bsds_to_png(src, tmp_path / "out", "test", progress=False)
    out = tmp_path / "out" / "test"
    assert summary == {"split": "test", "images": 3, "annotators": 4 + 2 + 1,
                       "files_written": 6, "out_dir": str(out)}
    assert sorted(p.name for p in (out / "union").iterdir()) == [
        "100075.png", "2018.png", "3063.png"]
    assert sorted(p.name for p in (out / "mean").iterdir()) == [
        "100075.png", "2018.png", "3063.png"]
    # 2018: counts 0 0 0 0 1 / 2 2 2 1 2 / 0 0 0 0 1 / 0 0 0 0 1 of 4 annotators
    np.testing.assert_array_equal(read_png(out / "mean" / "2018.png"), [
        [0, 0, 0, 0, 64], [128, 128, 128, 64, 128], [0, 0, 0, 0, 64], [0, 0, 0, 0, 64]])
    np.testing.assert_array_equal(read_png(out / "union" / "2018.png"), [
        [0, 0, 0, 0, 255], [255] * 5, [0, 0, 0, 0, 255], [0, 0, 0, 0, 255]])
    for name in ("100075", "2018", "3063"):
        union, mean = reference(src / "BSDS500/data/groundTruth/test" / f"{name}.mat")
        np.testing.assert_array_equal(read_png(out / "union" / f"{name}.png"), union)
        np.testing.assert_array_equal(read_png(out / "mean" / f"{name}.png"), mean)
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_mean_rounds_halves_up(tmp_path: Path) -> None:
    # six annotators; pixel j of row 0 is drawn by j of them: 255 * j / 6
    maps = [np.zeros((2, 7), int) for _ in range(6)]
    for j in range(7):
        for k in range(j):
            maps[k][0, j] = 1
    data = tmp_path / "src" / "BSDS500" / "data"
    write_image(data / "images/val/1.jpg", (2, 7))
    write_gt(data / "groundTruth/val/1.mat", maps)
    bsds_to_png(tmp_path / "src", tmp_path / "out", split="val", progress=False)
    mean = read_png(tmp_path / "out/val/mean/1.png")
    np.testing.assert_array_equal(mean[0], [0, 43, 85, 128, 170, 213, 255])
    np.testing.assert_array_equal(mean[1], 0)
    np.testing.assert_array_equal(mean, reference(data / "groundTruth/val/1.mat")[1])


def test_bad_input_raises_naming_the_file(tmp_path: Path) -> None:
    src = make_bsds(tmp_path / "src")
    write_gt(src / "BSDS500/data/groundTruth/test/3063.mat", [np.zeros((3, 5))])
    with pytest.raises(DataError, match=r"3063\.mat': annotator 0 boundaries are 5x3"):
        bsds_to_png(src, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match=r"no BSDS500 data under"):
        bsds_to_png(tmp_path / "nothing", tmp_path / "out", progress=False)


def test_real_image(shared_data: Path, tmp_path: Path) -> None:
    real = shared_data / "bsds500" / "BSDS500" / "data"
    name = sorted(p.stem for p in (real / "images/test").glob("*.jpg"))[0]
    # A one-image tree of links to the real files (research data is not copied).
    data = tmp_path / "one" / "data"
    for sub, ext in (("images", "jpg"), ("groundTruth", "mat")):
        (data / sub / "test").mkdir(parents=True)
        (data / sub / "test" / f"{name}.{ext}").symlink_to(real / sub / "test" / f"{name}.{ext}")
    summary = bsds_to_png(tmp_path / "one", tmp_path / "out", progress=False)
    k = scipy.io.loadmat(str(real / "groundTruth/test" / f"{name}.mat"))["groundTruth"].shape[1]
    assert summary["images"] == 1 and summary["annotators"] == k
    union, mean = reference(real / "groundTruth/test" / f"{name}.mat")
    np.testing.assert_array_equal(read_png(tmp_path / "out/test/union" / f"{name}.png"), union)
    np.testing.assert_array_equal(read_png(tmp_path / "out/test/mean" / f"{name}.png"), mean)
    assert union.any() and (mean < 255).any() and (mean > 0).any()
