"""voc_to_coco and cityscapes_to_coco: the JSON is loaded with pycocotools and compared with the
XML / PNG ground truth read here; the semantic PNGs with the label table applied by hand."""

from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from test_cityscapes import BOXES, FRAMES, THINGS, by_hand, frame_maps, make_cityscapes
from test_voc import CLASSES, make_voc

from mtvision.data.convert.cityscapes import cityscapes_to_coco
from mtvision.data.convert.voc import voc_to_coco
from mtvision.data.io import DataError
from mtvision.data.polygons import mask_to_segmentation


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timing lines
        return COCO(str(path))


def xml_objects(xml: Path) -> list[tuple[str, list[float], int]]:
    """(class, COCO bbox, difficult) of each object, straight from the XML."""
    out = []
    for o in ET.parse(xml).getroot().findall("object"):
        b = {t: float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")}
        out.append((o.findtext("name").strip(),
                    [b["xmin"] - 1, b["ymin"] - 1, b["xmax"] - b["xmin"] + 1,
                     b["ymax"] - b["ymin"] + 1],
                    int(o.findtext("difficult") or 0)))
    return out


def check_against_xml(coco: COCO, root: Path) -> int:
    """Every image's annotations equal its XML objects, in order; returns the number checked."""
    n = 0
    for img in coco.loadImgs(coco.getImgIds()):
        stem = Path(img["file_name"]).stem
        w, h = Image.open(root / "JPEGImages" / img["file_name"]).size
        assert (img["width"], img["height"]) == (w, h)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"], iscrowd=None)),
                      key=lambda a: a["id"])
        expected = xml_objects(root / "Annotations" / f"{stem}.xml")
        assert len(anns) == len(expected)
        for ann, (name, bbox, difficult) in zip(anns, expected, strict=True):
            assert coco.loadCats(ann["category_id"])[0]["name"] == name
            np.testing.assert_allclose(ann["bbox"], bbox, rtol=0, atol=1e-4)
            assert ann["iscrowd"] == difficult
            n += 1
    return n


def test_mask_to_segmentation_is_lossless() -> None:
    square = np.zeros((20, 30), np.uint8)
    square[2:12, 5:25] = 1
    ring = square.copy()
    ring[5:9, 10:20] = 0  # a hole polygons cannot carry
    polys = mask_to_segmentation(square, crowd=False)
    assert polys == [[5.0, 2.0, 5.0, 12.0, 25.0, 12.0, 25.0, 2.0]]  # corners, by hand
    for mask, crowd in ((ring, False), (square, True)):
        rle = mask_to_segmentation(mask, crowd=crowd)
        assert isinstance(rle, dict) and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(dict(rle, counts=rle["counts"].encode())),
                                      mask)


def test_voc_to_coco(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    arrays = make_voc(root)
    dst = tmp_path / "out" / "voc_train.json"
    summary = voc_to_coco(root, dst, progress=False)
    assert summary == {"split": "train", "images": 2, "annotations": 5, "difficult": 2,
                       "with_masks": 3, "categories": 20, "skipped_no_xml": 1, "dst": str(dst)}
    coco = load_coco(dst)
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(i + 1, n) for i, n in enumerate(CLASSES)]
    assert sorted(coco.getImgIds()) == [2008000001, 2008000002]
    assert check_against_xml(coco, root) == 5

    obj = arrays["obj1"]
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=2008000001, iscrowd=None)),
                  key=lambda a: a["id"])
    for k, ann in enumerate(anns):
        assert isinstance(ann["segmentation"], dict if ann["iscrowd"] else list)
        np.testing.assert_array_equal(coco.annToMask(ann), obj == k + 1)
        assert ann["area"] == int((obj == k + 1).sum())
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=2008000002, iscrowd=None)):
        assert "segmentation" not in ann  # no SegmentationObject PNG
        assert ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    assert not list(dst.parent.glob(".*"))  # no temporary file left behind


def test_voc_difficult_is_ignored_by_cocoeval(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    make_voc(root)
    dst = tmp_path / "voc.json"
    voc_to_coco(root, dst, progress=False)
    coco = load_coco(dst)
    # Perfect detections of every object, difficult ones included: a difficult object is
    # neither a miss nor a false positive, so AP@0.5 is exactly 1.
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 0.9} for a in coco.loadAnns(coco.getAnnIds(iscrowd=None))]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)


def test_voc_to_coco_image_set_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    make_voc(root)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    summary = voc_to_coco(root, tmp_path / "val.json", image_set="Main", split="val",
                          progress=False)
    assert (summary["images"], summary["annotations"], summary["difficult"]) == (1, 2, 1)
    with open(tmp_path / "val.json") as f:
        data = json.load(f)
    assert [im["file_name"] for im in data["images"]] == ["2008_000002.jpg"]
    with pytest.raises(DataError, match=r"Segmentation/val\.txt' not found"):
        voc_to_coco(root, tmp_path / "x.json", image_set="Segmentation", split="val",
                    progress=False)
    (root / "Annotations" / "2008_000002.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="2008_000002.xml': malformed XML"):
        voc_to_coco(root, tmp_path / "y.json", image_set="Main", split="val", progress=False)
    assert not (tmp_path / "y.json").exists()


def test_voc_to_coco_real_samples(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "voc" / "samples" / "voc"
    dst = tmp_path / "voc.json"
    summary = voc_to_coco(root, dst, progress=False)
    xmls = sorted((root / "Annotations").glob("*.xml"))
    n_objects = sum(len(xml_objects(x)) for x in xmls)
    assert (summary["images"], summary["annotations"]) == (len(xmls), n_objects) == (2, 3)
    coco = load_coco(dst)
    assert check_against_xml(coco, root) == 3
    # Masks of the segmented image, exactly the SegmentationObject regions: polygons would fill
    # holes, so a region with holes (both here: the chair around the dog, a gap in the dog)
    # is written as RLE.
    obj = np.array(Image.open(root / "SegmentationObject" / "2007_000063.png"))
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=2007000063)), key=lambda a: a["id"])
    assert summary["with_masks"] == len(anns) == 2
    for k, ann in enumerate(anns):
        np.testing.assert_array_equal(coco.annToMask(ann), obj == k + 1)
        assert ann["area"] == int((obj == k + 1).sum())
        holes = not np.array_equal(ndimage.binary_fill_holes(obj == k + 1), obj == k + 1)
        assert isinstance(ann["segmentation"], dict if holes else list)
    assert [a["area"] for a in anns] == [27632, 78930]


def test_cityscapes_to_coco(tmp_path: Path) -> None:
    src = tmp_path / "cityscapes"
    maps = make_cityscapes(src)
    out = tmp_path / "out"
    summary = cityscapes_to_coco(src, out, progress=False)
    ann_file = out / "annotations" / "instances_train.json"
    assert summary == {"split": "train", "images": 3, "annotations": 8, "instances": 6,
                       "crowd": 2, "categories": 8, "semantic_written": 3,
                       "ann_file": str(ann_file), "semantic_dir": str(out / "semantic" / "train")}
    coco = load_coco(ann_file)
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(i + 1, n) for i, n in enumerate(THINGS)]
    images = coco.loadImgs(sorted(coco.getImgIds()))
    assert [im["file_name"] for im in images] == [
        f"{city}/{stem}_leftImg8bit.png" for city, stem in FRAMES]
    for im in images:
        # Relative to leftImg8bit/SPLIT: the original files, nothing copied.
        assert (src / "leftImg8bit" / "train" / im["file_name"]).is_file()
        assert (im["width"], im["height"]) == (128, 64)
        stem = Path(im["file_name"]).name[: -len("_leftImg8bit.png")]
        inst = maps[stem]
        boxes, labels, crowd_boxes, crowd_labels = BOXES[stem]
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=im["id"], iscrowd=None)),
                      key=lambda a: a["id"])
        things = [a for a in anns if not a["iscrowd"]]
        crowds = [a for a in anns if a["iscrowd"]]
        to_xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]
        assert [a["bbox"] for a in things] == [to_xywh(b) for b in boxes]
        assert [a["category_id"] - 1 for a in things] == labels
        assert [a["bbox"] for a in crowds] == [to_xywh(b) for b in crowd_boxes]
        assert [a["category_id"] - 1 for a in crowds] == crowd_labels
        # Instance values in increasing order: the masks, one per annotation.
        values = sorted(int(v) for v in np.unique(inst)
                        if v >= 1000 and v // 1000 in (24, 25, 26, 27, 28, 31, 32, 33))
        groups = sorted(int(v) for v in np.unique(inst) if v in (24, 25, 26, 27, 28, 31, 32, 33))
        assert len(values) == len(things) and len(groups) == len(crowds)
        for ann, v in zip(things + crowds, values + groups, strict=True):
            assert isinstance(ann["segmentation"], dict if ann["iscrowd"] else list)
            np.testing.assert_array_equal(coco.annToMask(ann), inst == v)
            assert ann["area"] == int((inst == v).sum())

        city = im["file_name"].split("/")[0]
        png = out / "semantic" / "train" / city / f"{stem}_gtFine_labelTrainIds.png"
        sem = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert sem.dtype == np.uint8 and sem.ndim == 2
        label, _ = frame_maps(FRAMES[(city, stem)])
        np.testing.assert_array_equal(sem, by_hand(label))
    assert not list(out.rglob(".*"))  # no temporary file left behind


def test_cityscapes_to_coco_needs_instances(tmp_path: Path) -> None:
    src = tmp_path / "cityscapes"
    make_cityscapes(src, instance_ids=False)
    with pytest.raises(DataError, match="no gtFine instanceIds PNGs"):
        cityscapes_to_coco(src, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="leftImg8bit/val' not found"):
        cityscapes_to_coco(src, tmp_path / "out", split="val", progress=False)
