"""The ``cityscapes`` reader on a tiny synthetic gtFine tree with hand-computed expectations."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mtvision.data.formats.cityscapes import CityscapesDataset
from mtvision.data.io import DataError

H, W = 64, 128

# Label id -> train id, by hand from the cityscapesScripts table, for the ids used here
# (255 in a uint8 labelIds PNG is the license plate's -1).
TRAIN_ID = {0: 255, 7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 25: 12, 26: 13, 29: 255, 31: 16, 33: 18,
            255: 255}
THINGS = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
SEG = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
       "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
       "motorcycle", "bicycle"]

# (city, stem) -> instanceIds values painted in order: (value, rows, cols)
FRAMES = {
    ("aachen", "aachen_000000_000019"): [
        (23, slice(0, 10), slice(0, W)),          # sky
        (11, slice(10, 20), slice(0, 64)),        # building
        (7, slice(40, H), slice(0, W)),           # road
        (26000, slice(30, 45), slice(10, 40)),    # car 0
        (26001, slice(35, 50), slice(50, 70)),    # car 1
        (24000, slice(20, 50), slice(80, 86)),    # person 0
        (24, slice(20, 40), slice(100, 120)),     # a group of persons (crowd)
        (29000, slice(50, 60), slice(0, 8)),      # caravan: no train id, not a det class
        (255, slice(63, 64), slice(127, 128)),    # one license-plate pixel (-1 as uint8)
    ],
    ("aachen", "aachen_000001_000019"): [
        (8, slice(0, H), slice(0, W)),            # sidewalk
        (25000, slice(5, 25), slice(5, 15)),      # rider
        (33000, slice(15, 30), slice(3, 20)),     # bicycle
        (33, slice(40, 60), slice(60, 100)),      # bicycle group
        (31005, slice(2, 12), slice(90, 126)),    # train, instance number 5
    ],
    ("bochum", "bochum_000000_000313"): [
        (7, slice(32, H), slice(0, W)),
        (23, slice(0, 32), slice(0, W)),
    ],
}
# Boxes (xyxy pixel corners) and labels by hand from FRAMES, objects in increasing value.
BOXES = {
    "aachen_000000_000019": ([[80, 20, 86, 50], [10, 30, 40, 45], [50, 35, 70, 50]], [0, 2, 2],
                             [[100, 20, 120, 40]], [0]),
    # The bicycle, painted after the rider, hides the rider's rows 15..24: its box ends at 15.
    "aachen_000001_000019": ([[5, 5, 15, 15], [90, 2, 126, 12], [3, 15, 20, 30]], [1, 5, 7],
                             [[60, 40, 100, 60]], [7]),
    "bochum_000000_000313": ([], [], [], []),
}


def frame_maps(paint: list) -> tuple[np.ndarray, np.ndarray]:
    """labelIds (uint8) and instanceIds (uint16) maps of a frame."""
    inst = np.zeros((H, W), np.uint16)
    for value, rows, cols in paint:
        inst[rows, cols] = value
    label = np.where(inst >= 1000, inst // 1000, inst).astype(np.uint8)
    # The license plate (-1) only shows in labelIds; instanceIds keeps 0 (unlabeled) there.
    inst[inst == 255] = 0
    return label, inst


def by_hand(label: np.ndarray) -> np.ndarray:
    out = np.full(label.shape, 77, np.uint8)
    for lab_id, train_id in TRAIN_ID.items():
        out[label == lab_id] = train_id
    assert not (out == 77).any()
    return out


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_cityscapes(root: Path, split: str = "train", label_ids: bool = True,
                    train_ids: bool = False, instance_ids: bool = True) -> dict[str, np.ndarray]:
    """Write the FRAMES tree; returns stem -> instanceIds map."""
    rng = np.random.default_rng(0)
    maps = {}
    for (city, stem), paint in FRAMES.items():
        label, inst = frame_maps(paint)
        maps[stem] = inst
        write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                  rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        gt = root / "gtFine" / split / city
        if label_ids:
            write_png(gt / f"{stem}_gtFine_labelIds.png", label)
        if train_ids:
            write_png(gt / f"{stem}_gtFine_labelTrainIds.png", by_hand(label))
        if instance_ids:
            write_png(gt / f"{stem}_gtFine_instanceIds.png", inst)
    return maps


@pytest.fixture
def city(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "cityscapes"
    return root, make_cityscapes(root)


def test_index_and_classes(city) -> None:
    root, _ = city
    ds = CityscapesDataset(root, "train")
    assert len(ds) == 3
    assert [f.stem for f in ds.frames] == ["aachen_000000_000019", "aachen_000001_000019",
                                           "bochum_000000_000313"]
    assert ds.tasks == ["det", "seg"]
    assert ds.det_classes == THINGS
    assert ds.seg_classes == SEG
    raw = ds.read(1)
    assert raw.file_name == "aachen/aachen_000001_000019_leftImg8bit.png"
    assert raw.image_id == 2
    assert raw.image.shape == (H, W, 3)


def test_semantic_mapping(city) -> None:
    root, maps = city
    ds = CityscapesDataset(root, "train")
    raw = ds.read(0)
    # Spot checks of the official table: sky 23 -> 10, road 7 -> 0, car 26 -> 13,
    # person 24 -> 11 (also in the group), unlabeled 0 -> 255, caravan 29 -> 255, -1 -> 255.
    assert raw.seg[5, 5] == 10 and raw.seg[63, 0] == 0 and raw.seg[31, 11] == 13
    assert raw.seg[25, 82] == 11 and raw.seg[25, 110] == 11
    assert raw.seg[25, 0] == 255 and raw.seg[55, 3] == 255 and raw.seg[63, 127] == 255
    for i, f in enumerate(ds.frames):
        label, _ = frame_maps(FRAMES[(f.city, f.stem)])
        np.testing.assert_array_equal(ds.read(i).seg, by_hand(label))


def test_boxes_labels_and_crowds(city) -> None:
    root, maps = city
    ds = CityscapesDataset(root, "train")
    for i, f in enumerate(ds.frames):
        boxes, labels, crowd_boxes, crowd_labels = BOXES[f.stem]
        raw = ds.read(i)
        np.testing.assert_array_equal(raw.boxes, np.reshape(boxes, (-1, 4)))
        np.testing.assert_array_equal(raw.labels, labels)
        np.testing.assert_array_equal(raw.crowd_boxes, np.reshape(crowd_boxes, (-1, 4)))
        np.testing.assert_array_equal(raw.crowd_labels, crowd_labels)
        assert raw.boxes.dtype == np.float32 and raw.labels.dtype == np.int64
        assert raw.instance_masks is None  # not asked for: not built


def test_instance_masks(city) -> None:
    root, maps = city
    ds = CityscapesDataset(root, "train", instance_masks=True)
    inst = maps["aachen_000000_000019"]
    raw = ds.read(0)
    np.testing.assert_array_equal(raw.instance_masks,
                                  np.stack([inst == 24000, inst == 26000, inst == 26001]))
    np.testing.assert_array_equal(raw.crowd_masks, (inst == 24)[None])
    assert raw.instance_masks.dtype == np.uint8
    raw = ds.read(2)
    assert raw.instance_masks.shape == (0, H, W) and raw.crowd_masks.shape == (0, H, W)

    t = ds[1]["targets"]
    np.testing.assert_array_equal(t["det"]["boxes"].numpy(), BOXES["aachen_000001_000019"][0])
    np.testing.assert_array_equal(t["det"]["crowd_boxes"].numpy(), [[60, 40, 100, 60]])
    np.testing.assert_array_equal(t["det"]["crowd_labels"].numpy(), [7])
    assert t["det"]["masks"].shape == (3, H, W) and t["det"]["crowd_masks"].shape == (1, H, W)
    edge = CityscapesDataset(root, "train", tasks=["edge"], derive_edges="instances")
    assert set(edge[0]["targets"]) == {"edge"}


def test_label_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    make_cityscapes(root, label_ids=False, train_ids=True)
    ds = CityscapesDataset(root, "train")
    assert ds.tasks == ["det", "seg"]
    for i, f in enumerate(ds.frames):
        label, _ = frame_maps(FRAMES[(f.city, f.stem)])
        np.testing.assert_array_equal(ds.read(i).seg, by_hand(label))
    with pytest.raises(DataError, match=r"no '\*_gtFine_labelIds.png'"):
        CityscapesDataset(root, "train", label_suffix="labelIds")
    with pytest.raises(DataError, match="label_suffix must be one of"):
        CityscapesDataset(root, "train", label_suffix="color")

    both = tmp_path / "both"
    make_cityscapes(both, train_ids=True)
    # Both present: labelIds by default, the converted files when asked for.
    assert CityscapesDataset(both, "train").frames[0].labels.name.endswith("_labelIds.png")
    ds = CityscapesDataset(both, "train", label_suffix="labelTrainIds")
    assert ds.frames[0].labels.name.endswith("_labelTrainIds.png")
    np.testing.assert_array_equal(ds.read(0).seg, CityscapesDataset(both, "train").read(0).seg)


def test_partial_tasks(tmp_path: Path) -> None:
    seg_only = tmp_path / "seg_only"
    make_cityscapes(seg_only, instance_ids=False)
    assert CityscapesDataset(seg_only, "train").tasks == ["seg"]
    with pytest.raises(DataError, match="needs instance masks"):
        CityscapesDataset(seg_only, "train", derive_edges="instances")
    det_only = tmp_path / "det_only"
    make_cityscapes(det_only, label_ids=False)
    assert CityscapesDataset(det_only, "train").tasks == ["det"]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_layout_errors(city, tmp_path: Path) -> None:
    root, _ = city
    with pytest.raises(DataError) as e:
        CityscapesDataset(root, "val")
    assert "leftImg8bit/val' not found" in one_line(e)
    (root / "leftImg8bit" / "val").mkdir()
    with pytest.raises(DataError, match="gtFine/val' not found"):
        CityscapesDataset(root, "val")
    (root / "gtFine" / "val").mkdir()
    with pytest.raises(DataError, match=r"no '\*_leftImg8bit.png' frames"):
        CityscapesDataset(root, "val")
    (root / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_instanceIds.png").unlink()
    with pytest.raises(DataError) as e:
        CityscapesDataset(root, "train")
    assert ("bochum_000000_000313_leftImg8bit.png' has no gtFine instanceIds PNG"
            in one_line(e)) and "1 of 3 frames" in str(e.value)


@pytest.mark.parametrize("what, fill, problem", [
    ("labelIds", 40, "have id 40, not a Cityscapes label id (0..33)"),
    ("instanceIds", 7001, "has value 7001: label 7 has no instances"),
    ("instanceIds", 500, "has value 500, not a label id (0..33) or an instance id"),
])
def test_bad_ids(city, what: str, fill: int, problem: str) -> None:
    root, maps = city
    gt = root / "gtFine" / "train" / "aachen"
    inst = maps["aachen_000000_000019"].copy()
    inst[0, 0] = fill
    label = np.where(inst >= 1000, inst // 1000, inst).astype(np.uint8)
    write_png(gt / f"aachen_000000_000019_gtFine_{what}.png",
              label if what == "labelIds" else inst)
    with pytest.raises(DataError) as e:
        CityscapesDataset(root, "train").read(0)
    msg = one_line(e)
    assert f"aachen_000000_000019_gtFine_{what}.png" in msg and problem in msg


def test_bad_files(city) -> None:
    root, _ = city
    gt = root / "gtFine" / "train" / "aachen"
    inst_png = gt / "aachen_000000_000019_gtFine_instanceIds.png"
    ds = CityscapesDataset(root, "train")
    inst_png.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert f"cannot read instance map '{inst_png}': not a decodable image" in one_line(e)
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 2] = 7
    write_png(inst_png, colour)
    with pytest.raises(DataError, match="different colour channels"):
        ds.read(0)
    write_png(inst_png, np.zeros((H, W + 2), np.uint16))
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert "instanceIds.png' is 130x64, its frame is 128x64" in one_line(e)
    write_png(gt / "aachen_000001_000019_gtFine_labelIds.png", np.zeros((H - 1, W), np.uint8))
    with pytest.raises(DataError, match="seg map is 128x63, image is 128x64"):
        ds[1]
