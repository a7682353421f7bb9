"""A corpus of malformed inputs: each gives one clear error line naming the file (or config key)
and the problem, or, with ``skip_invalid``, a warning and a skipped, counted sample; through the
command-line tools an ``error: ...`` line and exit status 2, never a traceback, and never a
partial output file.

Every case of the list is here, built small in ``tmp_path``; where a format's own tests already
cover a case in depth, a comment points to them.

What each input gives:

- truncated JPEG: DataError "cannot read image '...': truncated JPEG (...)" (whatever the
  OpenCV version); truncated PNG: "... not a decodable image (...)";
- PNG grey / grey+alpha / RGBA / palette / 16-bit as an image: RGB uint8 (alpha dropped,
  palette colours, 16-bit scaled by v / 257 rounded); as a mask: palette -> its indices,
  16-bit -> kept when <= 255, colour -> DataError; as a label map (instance ids): palette ->
  indices, 16-bit kept as uint16;
- mask of the wrong size, class id out of range (seg mask, YOLO line, COCO category): a
  DataError naming the mask, the label file and line, or the JSON, annotation and image;
- box outside the image: YOLO coordinates more than 1 % outside [0, 1] are a DataError, less
  is clipped; a COCO box partly outside is clipped, one wholly outside is a DataError; a box
  with zero or negative size is a DataError in both;
- empty or missing YOLO label file: no objects (a valid negative image); missing or empty
  mask PNG or annotation JSON: DataError;
- missing image: DataError "cannot read image '...': file not found";
- bad YAML (config, YOLO data.yaml, a binary file as the config): ConfigError / DataError with
  the file and line;
- unknown config key: ConfigError naming the file, the key and the closest valid key;
- a checkpoint that does not fit (other backbone, other number or names of classes):
  tools/eval.py, tools/infer.py and --resume refuse with one line naming the mismatch;
- a checkpoint carrying a pickled object: CheckpointError "refused to load
  (weights_only=True)", and the payload never runs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mtvision.config import load_config
from mtvision.data.formats.coco import CocoDataset
from mtvision.data.formats.mtv import MTVDataset
from mtvision.data.formats.yolo import YoloDataset
from mtvision.data.io import DataError, read_image, read_label_map, read_mask, write_json_atomic
from mtvision.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mtvision.registry import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
JPEG = REPO / "tests" / "data" / "images" / "000000343934.jpg"  # 160x120


def one_line(err: BaseException | str, *parts: Any) -> str:
    """The message, checked to be one line that mentions every one of ``parts``."""
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    for part in parts:
        assert str(part) in msg, f"{part!r} not in {msg!r}"
    return msg


def skipped(ds: Any, index: int, match: str) -> dict[str, Any]:
    """``ds[index]`` with ``skip_invalid``: one warning matching ``match``, counted once."""
    before = ds.num_skipped
    with pytest.warns(UserWarning, match=match):
        sample = ds[index]
    assert ds.num_skipped == before + 1
    return sample


# ----------------------------------------------------------------------------------------------
# Tiny datasets


def _image(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def make_mtv(root: Path, n: int = 3, h: int = 24, w: int = 32) -> Path:
    """``n`` images (``1.png``..) with a box of class 'thing' and a seg mask (1 = thing)."""
    images, anns = [], []
    for i in range(1, n + 1):
        _image(root / "images" / "train" / f"{i}.png", h, w, seed=i)
        seg = np.zeros((h, w), np.uint8)
        seg[4:12, 6:20] = 1
        (root / "semseg" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "semseg" / "train" / f"{i}.png"), seg)
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w,
                       "seg_file": f"semseg/train/{i}.png"})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [6, 4, 14, 8],
                     "area": 112, "iscrowd": 0})
    write_json_atomic({"images": images, "annotations": anns,
                       "categories": [{"id": 1, "name": "thing"}],
                       "mtvision": {"tasks": ["det", "seg"],
                                    "seg_classes": ["background", "thing"]}},
                      root / "annotations" / "train.json")
    return root


def edit_json(path: Path, fn: Any) -> None:
    data = json.loads(path.read_text())
    fn(data)
    write_json_atomic(data, path)


def coco(root: Path, **kw: Any) -> CocoDataset:
    """The ``coco`` reader on a ``make_mtv`` folder."""
    return CocoDataset(root, "train", ann_file="annotations/train.json",
                       img_dir="images/train", **kw)


def make_yolo(root: Path, n: int = 3, line: str = "0 0.5 0.5 0.25 0.5\n") -> Path:
    """``n`` 32x24 images (``1.png``..) with one label line each; classes ``[a, b]``."""
    for i in range(1, n + 1):
        _image(root / "images" / "train" / f"{i}.png", seed=i)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{i}.txt").write_text(line)
    (root / "data.yaml").write_text("names: [a, b]\ntrain: images/train\n")
    return root


# ----------------------------------------------------------------------------------------------
# Truncated files


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = JPEG.read_bytes()
    cut = tmp_path / "cut.jpg"
    for size in (len(data) // 2, len(data) - 2):  # half the scan; only the end marker lost
        cut.write_bytes(data[:size])
        with pytest.raises(DataError) as info:
            read_image(cut)
        assert one_line(info.value) == (f"cannot read image '{cut}': truncated JPEG (the data "
                                        "ends before the end-of-image marker)")
    # Data appended after a complete JPEG (some cameras do it) is not truncation.
    cut.write_bytes(data + b"\xff\xda\x00\x04trailing")
    assert read_image(cut).shape == (120, 160, 3)


def test_truncated_image_in_a_dataset_is_skipped(tmp_path: Path) -> None:
    root = make_yolo(tmp_path)
    bad = root / "images" / "train" / "2.jpg"
    bad.write_bytes(JPEG.read_bytes()[:5000])
    (root / "images" / "train" / "2.png").unlink()
    with pytest.raises(DataError) as info:
        YoloDataset(root, "train")[1]
    one_line(info.value, bad, "truncated JPEG")
    ds = YoloDataset(root, "train", skip_invalid=True)
    assert skipped(ds, 1, rf"skipping invalid sample 1: .*{bad.name}.*truncated")["image_id"] == 3
    assert [ds[i]["image_id"] for i in (0, 2)] == [1, 3] and ds.num_skipped == 1


def test_truncated_png(tmp_path: Path) -> None:
    png = tmp_path / "full.png"
    _image(png, 64, 64)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:2000])
    for fn, what in ((read_image, "image"), (read_mask, "mask")):
        with pytest.raises(DataError) as info:
            fn(cut)
        assert one_line(info.value) == (f"cannot read {what} '{cut}': not a decodable image "
                                        "(corrupt or unsupported)")
    pal = Image.fromarray(np.random.default_rng(0).integers(0, 3, (64, 64), dtype=np.uint8),
                          "P")
    pal.save(tmp_path / "pal.png")
    cut.write_bytes((tmp_path / "pal.png").read_bytes()[:200])
    with pytest.raises(DataError) as info:
        read_mask(cut)
    assert one_line(info.value) == (f"cannot read mask '{cut}': not a decodable image (image "
                                    "file is truncated)")


# ----------------------------------------------------------------------------------------------
# PNGs in unusual modes (see also tests/data/test_dataset.py::test_read_image_conversions)

G16 = np.array([[0, 257, 65535], [1000, 30000, 65534]], np.uint16)
# 16-bit -> 8-bit is v / 257 rounded (65535 -> 255), not the low or high byte.
G16_AS_8 = np.array([[0, 1, 255], [4, 117, 255]], np.uint8)
IDS = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255]  # index 0 red, 1 green, 2 blue


def _write_png(path: Path, mode: str) -> None:
    """A 3x2 PNG in ``mode`` (Pillow's names; "RGB16" via OpenCV)."""
    if mode == "L":
        Image.fromarray(np.array([[0, 100, 255], [1, 2, 3]], np.uint8), "L").save(path)
    elif mode == "LA":
        grey = np.array([[0, 100, 255], [1, 2, 3]], np.uint8)
        Image.fromarray(np.dstack([grey, np.full_like(grey, 60)]), "LA").save(path)
    elif mode == "RGBA":
        px = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]] * 2, np.uint8)
        Image.fromarray(px, "RGBA").save(path)
    elif mode in ("P", "P+transparency"):
        im = Image.fromarray(IDS, "P")
        im.putpalette(PALETTE)
        im.save(path, **({"transparency": 0} if mode != "P" else {}))
    elif mode == "I;16":
        Image.fromarray(G16).save(path)
        assert Image.open(path).mode == "I;16"
    elif mode == "RGB16":
        # B, G, R for OpenCV: R = G16, G = 128 * 257 (-> 128), B = 0.
        cv2.imwrite(str(path), np.dstack([np.zeros_like(G16), np.full_like(G16, 128 * 257),
                                          G16]))
    else:
        raise AssertionError(mode)


RGB_OF = {
    "L": np.repeat(np.array([[0, 100, 255], [1, 2, 3]], np.uint8)[..., None], 3, axis=2),
    "LA": np.repeat(np.array([[0, 100, 255], [1, 2, 3]], np.uint8)[..., None], 3, axis=2),
    "RGBA": np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]]] * 2, np.uint8),
    "P": np.array(PALETTE, np.uint8).reshape(3, 3)[IDS],
    "P+transparency": np.array(PALETTE, np.uint8).reshape(3, 3)[IDS],
    "I;16": np.repeat(G16_AS_8[..., None], 3, axis=2),
    "RGB16": np.dstack([G16_AS_8, np.full_like(G16_AS_8, 128), np.zeros_like(G16_AS_8)]),
}


@pytest.mark.parametrize("mode", list(RGB_OF))
def test_png_modes_as_images_become_rgb_uint8(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "x.png"
    _write_png(path, mode)
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == (2, 3, 3)
    np.testing.assert_array_equal(img, RGB_OF[mode])


@pytest.mark.parametrize("mode, expected", [
    ("L", np.array([[0, 100, 255], [1, 2, 3]], np.uint8)),
    ("LA", np.array([[0, 100, 255], [1, 2, 3]], np.uint8)),  # alpha ignored
    ("P", IDS),  # class ids = palette indices, whatever the colours
    ("P+transparency", IDS),
    ("I;16 small", np.array([[0, 7, 255], [1, 2, 3]], np.uint8)),
])
def test_png_modes_as_masks_give_class_ids(tmp_path: Path, mode: str,
                                           expected: np.ndarray) -> None:
    path = tmp_path / "m.png"
    if mode == "I;16 small":
        Image.fromarray(expected.astype(np.uint16)).save(path)
    else:
        _write_png(path, mode)
    m = read_mask(path)
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(read_label_map(path), expected)


@pytest.mark.parametrize("mode, problem", [
    ("I;16", "16-bit values above 255 (max 65535)"),
    ("RGB16", "it has 3 different channels (a colour image?); expected single-channel class "
              "ids or a palette PNG"),
    ("RGBA", "it has 4 different channels (a colour image?); expected single-channel class "
             "ids or a palette PNG"),
])
def test_png_modes_that_are_not_masks(tmp_path: Path, mode: str, problem: str) -> None:
    path = tmp_path / "m.png"
    _write_png(path, mode)
    with pytest.raises(DataError) as info:
        read_mask(path)
    assert one_line(info.value) == f"cannot read mask '{path}': {problem}"
    if mode == "I;16":  # a label map keeps 16-bit ids (Cityscapes instanceIds)
        out = read_label_map(path)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, G16)


def test_palette_mask_in_a_dataset(tmp_path: Path) -> None:
    root = make_mtv(tmp_path)
    ids = np.zeros((24, 32), np.uint8)
    ids[2:6, 3:9] = 1
    im = Image.fromarray(ids, "P")
    im.putpalette([0, 0, 0, 128, 0, 0])  # VOC colours: 1 is dark red, not grey 1
    im.save(root / "semseg" / "train" / "2.png")
    seg = MTVDataset(root, "train")[1]["targets"]["seg"]
    np.testing.assert_array_equal(seg.numpy(), ids)


# ----------------------------------------------------------------------------------------------
# Masks: wrong size, class id out of range, missing or empty file
# (more per format: tests/data/test_dataset.py::test_invalid_labels_raise, formats/test_*.py)


@pytest.mark.parametrize("case", ["wrong_size", "class_out_of_range", "missing", "empty"])
def test_bad_seg_mask(tmp_path: Path, case: str) -> None:
    root = make_mtv(tmp_path)
    mask = root / "semseg" / "train" / "2.png"
    if case == "wrong_size":
        cv2.imwrite(str(mask), np.zeros((12, 16), np.uint8))
        expected = f"mask '{mask}' is 16x12, its image is 32x24"
    elif case == "class_out_of_range":
        cv2.imwrite(str(mask), np.full((24, 32), 7, np.uint8))
        expected = f"mask '{mask}' has class id 7 out of range 0..1 (or 255 = ignore)"
    elif case == "missing":
        mask.unlink()
        expected = f"cannot read mask '{mask}': file not found"
    else:
        mask.write_bytes(b"")
        expected = f"cannot read mask '{mask}': file is empty"
    ds = MTVDataset(root, "train")
    assert ds[0]["image_id"] == 1
    with pytest.raises(DataError) as info:
        ds[1]
    assert one_line(info.value) == expected

    ds = MTVDataset(root, "train", skip_invalid=True)
    assert skipped(ds, 1, r"skipping invalid sample 1: .*semseg/train/2\.png")["image_id"] == 3
    assert [ds[i]["image_id"] for i in (0, 2)] == [1, 3] and ds.num_skipped == 1


# ----------------------------------------------------------------------------------------------
# YOLO labels (every bad-line message: tests/data/formats/test_yolo.py::
# test_bad_label_line_messages; the 1 % tolerance: test_small_overshoot_is_clipped)


@pytest.mark.parametrize("line, problem", [
    ("2 0.5 0.5 0.2 0.2", "class id 2 out of range 0..1"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 out of range 0..1"),
    ("0 1.5 0.5 0.2 0.2", "coordinate 1.5 outside [0, 1] (coordinates must be normalised by "
                          "the image size)"),
    ("0 16 12 8 8", "coordinate 16 outside [0, 1] (coordinates must be normalised by the "
                    "image size)"),  # pixels instead of normalised
    ("0 0.5 0.5 -0.2 0.2", "coordinate -0.2 outside [0, 1] (coordinates must be normalised by "
                           "the image size)"),
    ("0 0.5 0.5 0 0.2", "box width and height must be > 0"),
])
def test_bad_yolo_label(tmp_path: Path, line: str, problem: str) -> None:
    root = make_yolo(tmp_path)
    label = root / "labels" / "train" / "2.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(DataError) as info:
        YoloDataset(root, "train")[1]
    assert one_line(info.value) == f"label file '{label}' line 2: {problem}"
    ds = YoloDataset(root, "train", skip_invalid=True)
    assert skipped(ds, 1, r"skipping invalid sample 1: .*2\.txt' line 2")["image_id"] == 3
    assert ds[0]["image_id"] == 1 and ds.num_skipped == 1


def test_yolo_box_slightly_outside_is_clipped(tmp_path: Path) -> None:
    root = make_yolo(tmp_path, n=1, line="0 0.9 0.5 0.205 0.5\n")  # right edge at 1.0025
    boxes = YoloDataset(root, "train").read(0).boxes
    np.testing.assert_allclose(boxes, [[(0.9 - 0.205 / 2) * 32, 6, 32, 18]], atol=1e-4)


def test_yolo_empty_and_missing_label_files_are_negative_images(tmp_path: Path) -> None:
    root = make_yolo(tmp_path)
    (root / "labels" / "train" / "1.txt").write_text("")
    (root / "labels" / "train" / "2.txt").unlink()
    ds = YoloDataset(root, "train")
    for i in (0, 1):
        det = ds[i]["targets"]["det"]
        assert det["boxes"].shape == (0, 4) and det["labels"].shape == (0,)
    assert len(ds[2]["targets"]["det"]["boxes"]) == 1 and ds.num_skipped == 0


def test_bad_yolo_data_yaml(tmp_path: Path) -> None:
    root = make_yolo(tmp_path)
    (root / "data.yaml").write_text("names: [a, b\ntrain: images/train\n")
    with pytest.raises(DataError) as info:
        YoloDataset(root, "train")
    assert one_line(info.value) == (f"cannot read dataset file '{root / 'data.yaml'}': line 2 "
                                    "invalid YAML (expected ',' or ']', but got ':')")


# ----------------------------------------------------------------------------------------------
# COCO annotations (more: tests/data/formats/test_coco.py::test_bad_annotations_raise)


@pytest.mark.parametrize("bbox, problem", [
    ([6, 4, -14, 8], "has degenerate bbox [6, 4, -14, 8] (width and height must be > 0)"),
    ([6, 4, 14, 0], "has degenerate bbox [6, 4, 14, 0] (width and height must be > 0)"),
    ([40, 4, 10, 8], "has bbox [40, 4, 10, 8] outside the 32x24 image"),
    ([-20, -9, 10, 8], "has bbox [-20, -9, 10, 8] outside the 32x24 image"),
])
def test_bad_coco_box(tmp_path: Path, bbox: list[int], problem: str) -> None:
    root = make_mtv(tmp_path)
    ann_file = root / "annotations" / "train.json"
    edit_json(ann_file, lambda d: d["annotations"][1].update(bbox=bbox))
    with pytest.raises(DataError) as info:
        coco(root)[1]
    image = root / "images" / "train" / "2.png"
    assert one_line(info.value) == f"'{ann_file}': annotation 2 of image '{image}' {problem}"
    ds = coco(root, skip_invalid=True)
    assert skipped(ds, 1, r"skipping invalid sample 1: .*annotation 2 of image")["image_id"] == 3


def test_coco_box_partly_outside_is_clipped(tmp_path: Path) -> None:
    root = make_mtv(tmp_path)
    edit_json(root / "annotations" / "train.json",
              lambda d: d["annotations"][0].update(bbox=[-4, 20, 40, 10]))
    boxes = coco(root)[0]["targets"]["det"]["boxes"]
    np.testing.assert_allclose(boxes.numpy(), [[0, 20, 32, 24]])


def test_coco_class_id_out_of_range(tmp_path: Path) -> None:
    root = make_mtv(tmp_path)
    ann_file = root / "annotations" / "train.json"
    edit_json(ann_file, lambda d: d["annotations"][1].update(category_id=5))
    with pytest.raises(DataError) as info:
        coco(root)[1]
    image = root / "images" / "train" / "2.png"
    assert one_line(info.value) == (f"'{ann_file}': annotation 2 of image '{image}' has "
                                    "category_id 5, not among the 1 declared category ids [1]")
    ds = coco(root, skip_invalid=True)
    assert skipped(ds, 1, "category_id 5")["image_id"] == 3


@pytest.mark.parametrize("content, problem", [
    ("", "Expecting value: line 1 column 1 (char 0)"),
    ('{"images": [', "Expecting value: line 1 column 13 (char 12)"),
])
def test_empty_or_cut_annotation_file(tmp_path: Path, content: str, problem: str) -> None:
    root = make_mtv(tmp_path)
    ann_file = root / "annotations" / "train.json"
    ann_file.write_text(content)
    with pytest.raises(DataError) as info:
        coco(root)
    assert one_line(info.value) == f"cannot read annotation file '{ann_file}': {problem}"


# ----------------------------------------------------------------------------------------------
# Missing image


def test_missing_image(tmp_path: Path) -> None:
    root = make_mtv(tmp_path / "coco")
    image = root / "images" / "train" / "2.png"
    image.unlink()
    with pytest.raises(DataError) as info:
        coco(root)[1]
    assert one_line(info.value) == f"cannot read image '{image}': file not found"
    ds = coco(root, skip_invalid=True)
    assert skipped(ds, 1, r"skipping invalid sample 1: .*2\.png': file not found")[
        "image_id"] == 3

    # A YOLO image list naming a file that is not there.
    root = make_yolo(tmp_path / "yolo")
    (root / "train.txt").write_text("images/train/1.png\nimages/train/9.png\n")
    (root / "data.yaml").write_text("names: [a, b]\ntrain: train.txt\n")
    with pytest.raises(DataError) as info:
        YoloDataset(root, "train")[1]
    assert one_line(info.value) == (f"cannot read image '{root / 'images/train/9.png'}': file "
                                    "not found")


def test_every_sample_invalid(tmp_path: Path) -> None:
    root = make_mtv(tmp_path, n=2)
    for p in (root / "images" / "train").iterdir():
        p.unlink()
    ds = coco(root, skip_invalid=True)
    with pytest.warns(UserWarning), pytest.raises(DataError) as info:
        ds[0]
    assert one_line(info.value) == f"'{root / 'annotations/train.json'}': no valid sample (2 " \
                                   "images)"
    assert ds.num_skipped == 2


# ----------------------------------------------------------------------------------------------
# Config files (more: tests/test_config.py)


def test_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: {name: resnet18\n  neck: {name: fpn}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert one_line(info.value) == (f"{bad}: line 3 invalid YAML (expected ',' or '}}', but "
                                    "got ':')")
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("train:\n\tepochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(tabs)
    one_line(info.value, tabs, "line 2 invalid YAML", "'\\t'")
    # A binary file given as the config (e.g. tools/eval.py CHECKPOINT CONFIG swapped).
    binary = tmp_path / "best.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}}, binary)
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    one_line(info.value, binary, "not a YAML text file")


@pytest.mark.parametrize("text, expected", [
    ("trian: {epochs: 1}", "unknown key 'trian' (did you mean 'train'?)"),
    ("train: {epoch: 1}", "unknown key 'train.epoch' (did you mean 'epochs'?)"),
    ("train: {optimizer: {weight_decy: 0.1}}",
     "unknown key 'train.optimizer.weight_decy' (did you mean 'weight_decay'?)"),
    ("model: {heads: {seg: {name: fpn_seg, num_clases: 3}}}",
     "unknown key 'model.heads.seg.num_clases' for head 'fpn_seg' (did you mean "
     "'num_classes'?)"),
])
def test_unknown_config_key(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {DEMO}\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert one_line(info.value) == f"{cfg}: {expected}"


def test_unknown_dataset_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DEMO, ["data.options={skip_invalud: true}"])
    one_line(info.value, "override -o data.options=", "unknown option "
             "'data.options.skip_invalud' for dataset type 'mtvision'")


# ----------------------------------------------------------------------------------------------
# Checkpoints (more: tests/engine/test_checkpoint.py, tests/inference/test_predictor.py)


class Payload:
    """Unpickling this creates the folder ``marker``: code that a plain ``torch.load`` would
    run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.makedirs, (str(self.marker),))


def pickled_checkpoint(path: Path, marker: Path, state: dict[str, Any] | None = None) -> Path:
    state = dict(state or {"model": {}, "config": {}})
    torch.save({"format": "mtvision-checkpoint", "version": 1, **state,
                "extra": Payload(marker)}, path)
    return path


def test_pickled_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = pickled_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert one_line(info.value) == (
        f"{path}: refused to load (weights_only=True): it holds a pickled Python object "
        "(os.makedirs), which could run code when loaded; a checkpoint holds only "
        "tensors and plain data")
    assert "\x1b" not in str(info.value)  # no terminal escape codes from torch's message
    assert not marker.exists()
    # The payload is live: a plain unpickling would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# The command-line tools: one "error:" line, exit status 2, no partial output


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, overrides_for: Any) -> dict[str, Any]:
    """A tiny shapes set, the -o list of the tiny demo config on it and an (untrained)
    checkpoint of that config."""
    from mtvision.data.build import dataset_classes
    from mtvision.data.synthetic import generate_shapes
    from mtvision.models import build_model

    base = tmp_path_factory.mktemp("robust")
    root = generate_shapes(base / "shapes", num_train=2, num_val=2, image_size=64, seed=1)
    over = [o for o in overrides_for(root, 2) if not o.startswith("data.synthetic")]
    # The ResNet-18 the incompatible checkpoints below are told apart from (resnet34).
    over += ["data.synthetic=null", "data.batch_size=2", "model.backbone.name=resnet18"]
    cfg = load_config(DEMO, over)
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    classes = dataset_classes(MTVDataset(root, "val"))
    ckpt = save_checkpoint({"model": model.state_dict(), "config": cfg, "classes": classes},
                           base / "good.pt")
    return {"root": root, "over": over, "cfg": cfg, "ckpt": ckpt, "classes": classes,
            "state": model.state_dict()}


def _o(over: list[str]) -> list[str]:
    return sum((["-o", o] for o in over), [])


def fails(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a tool's ``main``; it must exit 2 with one ``error: ...`` line on stderr (progress
    bars aside)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines()
             if ln.strip() and not re.search(r"\d+%\|", ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return one_line(lines[0])


def leftovers(folder: Path) -> list[str]:
    """Files a failed run should not leave: checkpoints, metrics, predictions, temp files."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.suffix in (".pt", ".json", ".jsonl", ".tmp") or p.name.startswith("."))


def incompatible(env: dict[str, Any], path: Path, kind: str) -> Path:
    """A checkpoint that does not fit ``env``'s config or data, in one of several ways."""
    from mtvision.models import build_model

    cfg = copy.deepcopy(env["cfg"])
    state, classes = env["state"], env["classes"]
    if kind == "backbone_weights":  # its config says resnet34, its weights are resnet18's
        cfg["model"]["backbone"]["name"] = "resnet34"
    elif kind == "head_weights":  # its config says 3 det classes, its weights have 4
        cfg["model"]["heads"]["det"]["num_classes"] = 3
    elif kind == "num_classes":  # consistent, but 3 det classes where the data has 4
        cfg["model"]["heads"]["det"]["num_classes"] = 3
        state, classes = build_model(cfg["model"]).state_dict(), {}
    elif kind == "class_names":  # consistent, but other det classes than the data's
        classes = {**classes, "det": ["cat", "dog", "cow", "owl"]}
    elif kind == "resnet34":  # a consistent checkpoint of another backbone
        cfg["model"]["backbone"]["name"] = "resnet34"
        state = build_model(cfg["model"]).state_dict()
    else:
        raise AssertionError(kind)
    return save_checkpoint({"model": state, "config": cfg, "classes": classes}, path)


def test_train_tool_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import train as train_tool

    work = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {DEMO}\ntrain: {{epochs: 2\n")
    err = fails(train_tool.main, [str(bad), "--work-dir", str(work)], capsys)
    assert err == (f"error: {bad}: line 3 invalid YAML (expected ',' or '}}', but got "
                   "'<stream end>')")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(f"_base_: {DEMO}\ntrian: {{epochs: 2}}\n")
    err = fails(train_tool.main, [str(unknown), "--work-dir", str(work)], capsys)
    assert err == f"error: {unknown}: unknown key 'trian' (did you mean 'train'?)"
    assert not work.exists()


def test_train_tool_missing_data(tmp_path: Path, env: dict[str, Any],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tools import train as train_tool

    work = tmp_path / "run"
    nowhere = tmp_path / "nowhere"
    err = fails(train_tool.main, [str(DEMO), "--work-dir", str(work), "--device", "cpu",
                                  *_o([*env["over"], f"data.root={nowhere}"])], capsys)
    assert err == (f"error: annotation file '{nowhere / 'annotations/train.json'}' not found")
    assert leftovers(work) == []


def test_eval_tool_bad_config_and_data(tmp_path: Path, env: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tools import eval as eval_tool

    out = tmp_path / "out" / "metrics.json"
    ckpt = str(env["ckpt"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [\n")
    err = fails(eval_tool.main, [str(bad), ckpt, "--out", str(out)], capsys)
    one_line(err, bad, "invalid YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(f"_base_: {DEMO}\neval: {{max_imgs: 2}}\n")
    err = fails(eval_tool.main, [str(unknown), ckpt, "--out", str(out)], capsys)
    assert err == f"error: {unknown}: unknown key 'eval.max_imgs' (did you mean 'max_images'?)"
    # CONFIG and CHECKPOINT swapped.
    err = fails(eval_tool.main, [ckpt, str(DEMO), "--out", str(out)], capsys)
    one_line(err, ckpt, "not a YAML text file")
    nowhere = tmp_path / "nowhere"
    err = fails(eval_tool.main, [str(DEMO), ckpt, "--out", str(out), "--device", "cpu",
                                 *_o([*env["over"], f"data.root={nowhere}"])], capsys)
    assert err == f"error: annotation file '{nowhere / 'annotations/val.json'}' not found"
    err = fails(eval_tool.main, [str(DEMO), str(tmp_path / "none.pt"), "--out", str(out)],
                capsys)
    assert err == f"error: checkpoint not found: {tmp_path / 'none.pt'}"
    assert leftovers(tmp_path / "out") == []


def test_eval_tool_bad_image_mid_run(tmp_path: Path, env: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tools import eval as eval_tool

    root = Path(shutil.copytree(env["root"], tmp_path / "shapes"))
    image = sorted((root / "images" / "val").iterdir())[-1]
    image.write_bytes(image.read_bytes()[:300])  # the last image: the first batch is scored
    out = tmp_path / "out" / "metrics.json"
    argv = [str(DEMO), str(env["ckpt"]), "--out", str(out), "--device", "cpu", "--no-progress",
            *_o([*env["over"], f"data.root={root}", "data.val_batch_size=1"])]
    err = fails(eval_tool.main, argv, capsys)
    assert err == (f"error: cannot read image '{image}': truncated JPEG (the data ends before "
                   "the end-of-image marker)")
    assert leftovers(tmp_path / "out") == []
    # With skip_invalid the image is skipped with a warning and the results are written.
    with pytest.warns(UserWarning, match=rf"skipping invalid sample 1: .*{image.name}"):
        assert eval_tool.main([*argv, "-o", "data.skip_invalid=true"]) == 0
    assert set(json.loads(out.read_text())) == {"det", "seg", "edge", "cls"}


def test_evaluation_leaves_an_invalid_sample_out(tmp_path: Path, env: dict[str, Any]) -> None:
    from mtvision.data.build import build_dataset, build_loader

    root = Path(shutil.copytree(env["root"], tmp_path / "shapes"))
    image = sorted((root / "images" / "val").iterdir())[1]
    image.write_bytes(image.read_bytes()[:300])
    dcfg = {**env["cfg"]["data"], "root": str(root), "skip_invalid": True}
    ds = build_dataset(dcfg, dcfg["val_split"], train=False)
    with pytest.warns(UserWarning, match=rf"skipping invalid sample 1: .*{image.name}"):
        batches = list(build_loader(ds, 2, 0, train=False))
    ids = [int(i) for b in batches if b is not None for i in b["image_ids"]]
    # Scored once each, the bad one not at all (training replaces it by the next sample).
    assert len(ids) == len(ds) - 1 and len(set(ids)) == len(ids)
    train = build_dataset(dcfg, dcfg["val_split"], train=True)
    with pytest.warns(UserWarning, match="skipping invalid sample 1"):
        assert train[1]["image_id"] == ds[2 % len(ds)]["image_id"]


@pytest.mark.parametrize("kind, expected", [
    ("backbone_weights", "{ckpt}: weights do not fit the model of its config (missing: "
                         "backbone.layers.0.2.conv1.weight, backbone.layers.0.2.bn1.weight, "
                         "backbone.layers.0.2.bn1.bias, ... (96 in all))"),
    ("head_weights", "{ckpt}: weights do not fit the model of its config (shape checkpoint vs "
                     "model: heads.det.cls_logits.weight (4, 32, 3, 3) vs (3, 32, 3, 3), "
                     "heads.det.cls_logits.bias (4,) vs (3,))"),
    ("num_classes", "checkpoint {ckpt}: its det head has 3 classes but dataset '{root}' split "
                    "'val' has 4 det classes ['circle', 'square', 'triangle', 'star']"),
    ("class_names", "det classes differ between checkpoint {ckpt} ['cat', 'dog', 'cow', 'owl'] "
                    "and dataset '{root}' split 'val' ['circle', 'square', 'triangle', "
                    "'star']"),
])
def test_eval_tool_incompatible_checkpoint(tmp_path: Path, env: dict[str, Any], kind: str,
                                           expected: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tools import eval as eval_tool

    ckpt = incompatible(env, tmp_path / "other.pt", kind)
    out = tmp_path / "out" / "metrics.json"
    err = fails(eval_tool.main, [str(DEMO), str(ckpt), "--out", str(out), "--device", "cpu",
                                 *_o(env["over"])], capsys)
    assert err == "error: " + expected.format(ckpt=ckpt, root=env["root"])
    assert leftovers(tmp_path / "out") == []


def test_eval_tool_pickled_checkpoint(tmp_path: Path, env: dict[str, Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tools import eval as eval_tool

    marker = tmp_path / "code_ran"
    ckpt = pickled_checkpoint(tmp_path / "evil.pt", marker,
                              {"model": env["state"], "config": env["cfg"]})
    out = tmp_path / "out" / "metrics.json"
    err = fails(eval_tool.main, [str(DEMO), str(ckpt), "--out", str(out), *_o(env["over"])],
                capsys)
    one_line(err, ckpt, "refused to load (weights_only=True)", "(os.makedirs)")
    assert not marker.exists() and leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("kind, expected", [
    ("backbone_weights", "missing: backbone.layers.0.2.conv1.weight"),
    ("head_weights", "shape checkpoint vs model: heads.det.cls_logits.weight (4, 32, 3, 3) vs "
                     "(3, 32, 3, 3)"),
    ("pickled", "refused to load (weights_only=True)"),
])
def test_infer_tool_bad_checkpoint(tmp_path: Path, env: dict[str, Any], kind: str,
                                   expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import infer as infer_tool

    marker = tmp_path / "code_ran"
    if kind == "pickled":
        ckpt = pickled_checkpoint(tmp_path / "evil.pt", marker,
                                  {"model": env["state"], "config": env["cfg"]})
    else:
        ckpt = incompatible(env, tmp_path / "other.pt", kind)
    out = tmp_path / "out"
    err = fails(infer_tool.main, [str(ckpt), str(env["root"] / "images" / "val"), "--out",
                                  str(out), "--device", "cpu"], capsys)
    one_line(err, ckpt, expected)
    assert not marker.exists() and leftovers(out) == []


def test_infer_tool_bad_images(tmp_path: Path, env: dict[str, Any],
                               capsys: pytest.CaptureFixture[str]) -> None:
    from tools import infer as infer_tool

    out = tmp_path / "out"
    missing = tmp_path / "missing.jpg"
    err = fails(infer_tool.main, [str(env["ckpt"]), str(missing), "--out", str(out)], capsys)
    one_line(err, missing)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(JPEG.read_bytes()[:4000])
    err = fails(infer_tool.main, [str(env["ckpt"]), str(cut), "--out", str(out), "--device",
                                  "cpu"], capsys)
    one_line(err, cut, "truncated JPEG")
    assert leftovers(out) == []
    # In a folder, an unreadable image is skipped with a warning; the others are written.
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(JPEG, folder / "good.jpg")
    shutil.copy(cut, folder / "cut.jpg")
    with pytest.warns(UserWarning, match=r"cut\.jpg.*truncated JPEG"):
        assert infer_tool.main([str(env["ckpt"]), str(folder), "--out", str(out), "--device",
                                "cpu", "--no-media"]) == 0
    records = (out / "predictions.jsonl").read_text().splitlines()
    assert [Path(json.loads(r)["file"]).name for r in records] == ["good.jpg"]
    assert json.loads((out / "summary.json").read_text())["num_skipped"] == 1


def _resume_dir(tmp_path: Path, env: dict[str, Any], kind: str) -> tuple[Path, Path, str]:
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.yaml").write_text("# the config of the run being resumed\n")
    marker = tmp_path / "code_ran"
    if kind == "pickled":
        pickled_checkpoint(work / "last.pt", marker, {"model": env["state"],
                                                      "config": env["cfg"]})
    else:
        incompatible(env, work / "last.pt", "resnet34")
    return work, marker, (work / "config.yaml").read_text()


@pytest.mark.parametrize("kind, expected", [
    ("pickled", "refused to load (weights_only=True)"),
    ("resnet34", "weights do not fit the model of this config"),
])
def test_resume_refuses_a_bad_checkpoint(tmp_path: Path, env: dict[str, Any], kind: str,
                                         expected: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tools import train as train_tool

    work, marker, _ = _resume_dir(tmp_path, env, kind)
    last = work / "last.pt"
    before = last.read_bytes()
    err = fails(train_tool.main, [str(DEMO), "--work-dir", str(work), "--resume", "--device",
                                  "cpu", "--no-progress", *_o(env["over"])], capsys)
    one_line(err, last, expected)
    assert not marker.exists() and last.read_bytes() == before
    assert sorted(p.name for p in work.iterdir()) == ["config.yaml", "last.pt"]


def test_resume_names_the_config_difference_briefly(tmp_path: Path, env: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tools import train as train_tool

    work, _, _ = _resume_dir(tmp_path, env, "resnet34")
    err = fails(train_tool.main, [str(DEMO), "--work-dir", str(work), "--resume", "--device",
                                  "cpu", "--no-progress", *_o(env["over"])], capsys)
    assert len(err) < 500, len(err)
    one_line(err, work / "last.pt", "model.backbone.name: 'resnet34' in the checkpoint, "
             "'resnet18' in the config")


def test_resume_refuses_other_class_names(tmp_path: Path, env: dict[str, Any]) -> None:
    from mtvision.engine.trainer import Trainer

    work = tmp_path / "run"
    cfg = copy.deepcopy(env["cfg"])
    Trainer(copy.deepcopy(cfg), work, device="cpu", progress=False).save()
    state = load_checkpoint(work / "last.pt")
    state["classes"]["det"] = ["cat", "dog", "cow", "owl"]  # same number, other meaning
    save_checkpoint(state, work / "last.pt")
    with pytest.raises((ConfigError, CheckpointError)) as info:
        Trainer(cfg, work, resume=True, device="cpu", progress=False)
    one_line(info.value, work / "last.pt", "det classes")


@pytest.mark.parametrize("kind", ["pickled", "resnet34", "missing_data"])
def test_failed_start_leaves_the_run_folder_as_it_was(tmp_path: Path, env: dict[str, Any],
                                                      kind: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from tools import train as train_tool

    if kind == "missing_data":
        work = tmp_path / "run"
        argv = ["-o", f"data.root={tmp_path / 'nowhere'}"]
        before = None
    else:
        work, _, before = _resume_dir(tmp_path, env, kind)
        argv = ["--resume"]
    fails(train_tool.main, [str(DEMO), "--work-dir", str(work), "--device", "cpu",
                            "--no-progress", *_o(env["over"]), *argv], capsys)
    config = work / "config.yaml"
    assert (config.read_text() if config.exists() else None) == before


# Writes that fail half-way (disk full) leave neither a partial nor a temp file: checkpoints
# in tests/engine/test_checkpoint.py::test_failed_write_keeps_previous_file, JSON in
# tests/data/test_dataset.py::test_write_json_atomic, predictions.jsonl in
# tests/inference/test_infer_tool.py::test_refuses_to_overwrite_inputs.


def test_run_cli_prints_any_known_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from mtvision.cli import run_cli

    def fail() -> None:
        raise DataError("cannot read 'x.png':\n  two\tlines")

    assert run_cli(fail) == 2
    assert capsys.readouterr().err == "error: cannot read 'x.png': two lines\n"


def test_run_cli_reports_an_unexpected_os_error_on_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    from mtvision.cli import run_cli

    def full_disk() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/exp/metrics.jsonl")

    assert run_cli(full_disk) == 2
    assert capsys.readouterr().err == ("error: /runs/exp/metrics.jsonl: No space left on "
                                       "device\n")
