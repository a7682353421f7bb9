"""coco2yolo / yolo2coco: the round trip on the real COCO subset keeps boxes and polygons within
a pixel and the categories; yolo2coco of coco128-seg read back with pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from pycocotools.coco import COCO

from mtvision.data.convert.coco_yolo import coco_to_yolo, yolo_to_coco
from tools.convert_dataset import main


def test_coco_yolo_coco_round_trip(samples_dir: Path, tmp_path: Path) -> None:
    src = samples_dir / "coco"
    original = json.loads((src / "annotations.json").read_text())
    summary = coco_to_yolo(src / "annotations.json", src / "images", tmp_path / "yolo",
                           split="val", progress=False)
    crowd = [a for a in original["annotations"] if a["iscrowd"]]
    plain = [a for a in original["annotations"] if not a["iscrowd"]]
    assert summary["crowd_skipped"] == len(crowd) == 1
    assert summary["annotations"] == len(plain) == 35

    # Through the command-line tool, as a user would.
    assert main(["--no-progress", "yolo2coco", str(tmp_path / "yolo" / "data.yaml"),
                 str(tmp_path / "back.json"), "--split", "val"]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert [(c["id"], c["name"]) for c in back["categories"]] == \
        [(c["id"], c["name"]) for c in sorted(original["categories"], key=lambda c: c["id"])]
    name_of = {im["id"]: im["file_name"] for im in original["images"]}
    back_name = {im["id"]: im["file_name"] for im in back["images"]}
    assert sorted(back_name.values()) == sorted(name_of.values())

    def key(a: dict, names: dict) -> tuple:
        return names[a["image_id"]], a["category_id"], round(a["bbox"][0]), round(a["bbox"][1])

    # Pair annotations by image, category and position; every pair within a pixel.
    orig_by = sorted(plain, key=lambda a: key(a, name_of))
    back_by = sorted(back["annotations"], key=lambda a: key(a, back_name))
    assert len(orig_by) == len(back_by)
    for a, b in zip(orig_by, back_by, strict=True):
        assert name_of[a["image_id"]] == back_name[b["image_id"]]
        assert a["category_id"] == b["category_id"]
        np.testing.assert_allclose(b["bbox"], a["bbox"], atol=1.0)
        pa = np.concatenate([np.asarray(p, float) for p in a["segmentation"]]).reshape(-1, 2)
        pb = np.concatenate([np.asarray(p, float) for p in b["segmentation"]]).reshape(-1, 2)
        # YOLO has one polygon per object: a COCO object in several parts comes back as one
        # outline joining them through repeated vertices. Every vertex, either way, has a
        # counterpart within a pixel.
        d = np.linalg.norm(pa[:, None] - pb[None], axis=2)
        assert d.min(axis=1).max() <= 1.0 and d.min(axis=0).max() <= 1.0
        if len(a["segmentation"]) == 1:
            np.testing.assert_allclose(pb, pa, atol=1.0)


def test_yolo2coco_of_coco128_seg_reads_with_pycocotools(samples_dir: Path,
                                                         tmp_path: Path) -> None:
    root = samples_dir / "coco128-seg"
    lines = [line for p in sorted((root / "labels" / "train2017").glob("*.txt"))
             for line in p.read_text().splitlines() if line.strip()]
    yolo_to_coco(root / "data.yaml", tmp_path / "c.json", split="train", progress=False)
    api = COCO(str(tmp_path / "c.json"))
    assert len(api.getImgIds()) == 14
    assert len(api.getAnnIds()) == len(lines)
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    names = list(names.values()) if isinstance(names, dict) else names
    assert [api.cats[i]["name"] for i in sorted(api.cats)] == names
    # Each annotation's mask decodes and its box encloses it (pycocotools as the reference).
    for ann in api.loadAnns(api.getAnnIds()):
        m = api.annToMask(ann)
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        assert xs.min() >= x - 1 and xs.max() <= x + w + 1
        assert ys.min() >= y - 1 and ys.max() <= y + h + 1
