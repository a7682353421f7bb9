"""The ``voc`` reader on a small VOC2012-style tree written here, and on the shared VOC samples."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mtvision.data.formats.voc import VOCDataset
from mtvision.data.io import DataError

W, H = 64, 48
# The standard VOC order, written out by hand (not imported from the module under test).
CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor"]

# name -> [(class, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)]
OBJECTS = {
    "2008_000001": [("dog", (5, 4, 20, 30), 0), ("cat", (30, 10, 50, 40), 1),
                    ("person", (52, 2, 60, 12), 0)],
    "2008_000002": [("bird", (1, 1, 64, 48), 0), ("boat", (10, 10, 20, 20), 1)],
}


def write_xml(path: Path, objects: list, size: tuple[int, int] | None = (W, H)) -> None:
    lines = ["<annotation>", f"  <filename>{path.stem}.jpg</filename>"]
    if size is not None:
        lines.append(f"  <size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for name, (x0, y0, x1, y1), diff in objects:
        lines += ["  <object>", f"    <name>{name}</name>", f"    <difficult>{diff}</difficult>",
                  f"    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                  f"<ymax>{y1}</ymax></bndbox>", "  </object>"]
    lines.append("</annotation>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8))
    rng = np.random.default_rng(0)
    im.putpalette(rng.integers(0, 256, 768).astype(np.uint8).tobytes())  # makes it mode "P"
    assert im.mode == "P"
    im.save(path)


def box_pixels(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """Rows, columns of a 1-based inclusive VOC box."""
    x0, y0, x1, y1 = box
    return slice(y0 - 1, y1), slice(x0 - 1, x1)


def make_voc(root: Path) -> dict[str, np.ndarray]:
    """Image 1: XML + class + object PNGs; image 2: XML only; image 3: class PNG only.

    Returns the index arrays written (``cls1``, ``obj1``, ``cls3``).
    """
    rng = np.random.default_rng(1)
    for name in ("2008_000001", "2008_000002", "2008_000003"):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), img)
    for name, objs in OBJECTS.items():
        write_xml(root / "Annotations" / f"{name}.xml", objs)
    cls1 = np.zeros((H, W), np.uint8)
    obj1 = np.zeros((H, W), np.uint8)
    for k, (name, box, _) in enumerate(OBJECTS["2008_000001"]):
        cls1[box_pixels(box)] = CLASSES.index(name) + 1
        obj1[box_pixels(box)] = k + 1
    cls1[2, 4:20] = obj1[2, 4:20] = 255  # a void band above the dog
    cls3 = np.zeros((H, W), np.uint8)
    cls3[10:20, 5:40] = 1
    cls3[9, 5:40] = 255
    write_palette_png(root / "SegmentationClass" / "2008_000001.png", cls1)
    write_palette_png(root / "SegmentationObject" / "2008_000001.png", obj1)
    write_palette_png(root / "SegmentationClass" / "2008_000003.png", cls3)
    return {"cls1": cls1, "obj1": obj1, "cls3": cls3}


@pytest.fixture
def voc(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "VOC2012"
    return root, make_voc(root)


def test_layout_classes_and_tasks(voc) -> None:
    root, _ = voc
    ds = VOCDataset(root, "train")
    assert ds.names == ["2008_000001", "2008_000002", "2008_000003"]
    assert len(ds) == 3
    assert ds.det_classes == CLASSES
    assert ds.seg_classes == ["background", *CLASSES]
    assert ds.tasks == ["det", "seg"]
    assert ds.image_ids == [2008000001, 2008000002, 2008000003]
    assert ds.read(0).image.shape == (H, W, 3)


def test_boxes_are_pixel_corners_and_difficult_is_crowd(voc) -> None:
    root, _ = voc
    raw = VOCDataset(root, "train").read(0)
    # dog (5, 4, 20, 30) -> (4, 3, 20, 30); person (52, 2, 60, 12) -> (51, 1, 60, 12)
    np.testing.assert_array_equal(raw.boxes, [[4, 3, 20, 30], [51, 1, 60, 12]])
    np.testing.assert_array_equal(raw.labels, [11, 14])  # dog, person
    np.testing.assert_array_equal(raw.crowd_boxes, [[29, 9, 50, 40]])  # the difficult cat
    np.testing.assert_array_equal(raw.crowd_labels, [7])
    assert raw.boxes.dtype == np.float32 and raw.labels.dtype == np.int64

    raw = VOCDataset(root, "train", use_difficult=True).read(0)
    np.testing.assert_array_equal(raw.boxes, [[4, 3, 20, 30], [29, 9, 50, 40], [51, 1, 60, 12]])
    np.testing.assert_array_equal(raw.labels, [11, 7, 14])
    assert len(raw.crowd_boxes) == 0


def test_seg_reads_palette_indices_and_tasks_per_image(voc) -> None:
    root, arrays = voc
    ds = VOCDataset(root, "train")
    raw0, raw1, raw2 = ds.read(0), ds.read(1), ds.read(2)
    np.testing.assert_array_equal(raw0.seg, arrays["cls1"])
    assert raw1.seg is None and raw1.labelled_tasks() == ["det"]
    np.testing.assert_array_equal(raw2.seg, arrays["cls3"])
    assert raw2.boxes is None and raw2.labelled_tasks() == ["seg"]
    np.testing.assert_array_equal(raw1.boxes, [[0, 0, 64, 48]])
    np.testing.assert_array_equal(raw1.crowd_boxes, [[9, 9, 20, 20]])


def test_instance_masks_follow_xml_order(voc) -> None:
    root, arrays = voc
    obj = arrays["obj1"]
    assert VOCDataset(root, "train").read(0).instance_masks is None  # not asked for: not read
    ds = VOCDataset(root, "train", instance_masks=True)
    raw = ds.read(0)
    np.testing.assert_array_equal(raw.instance_masks, np.stack([obj == 1, obj == 3]))
    np.testing.assert_array_equal(raw.crowd_masks, (obj == 2)[None])
    assert raw.instance_masks.dtype == np.uint8
    assert ds.read(1).instance_masks is None  # no SegmentationObject PNG


def test_getitem_targets(voc) -> None:
    root, arrays = voc
    ds = VOCDataset(root, "train", instance_masks=True)
    t = ds[0]["targets"]
    np.testing.assert_array_equal(t["det"]["boxes"].numpy(), [[4, 3, 20, 30], [51, 1, 60, 12]])
    np.testing.assert_array_equal(t["det"]["crowd_boxes"].numpy(), [[29, 9, 50, 40]])
    np.testing.assert_array_equal(t["seg"].numpy(), arrays["cls1"])
    assert t["det"]["masks"].shape == (2, H, W)
    assert set(ds[1]["targets"]) == {"det"}
    assert set(ds[2]["targets"]) == {"seg"}
    # Edges derived from the seg map even when only "edge" is requested.
    edge_ds = VOCDataset(root, "train", tasks=["edge"], derive_edges="seg")
    assert set(edge_ds[0]["targets"]) == {"edge"}
    assert int((edge_ds[0]["targets"]["edge"] == 1).sum()) > 0


def test_image_sets(voc) -> None:
    root, _ = voc
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("2008_000002\n2008_000001\n\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2008_000003\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000001\n2008_000003\n")
    assert VOCDataset(root, "train").names == ["2008_000002", "2008_000001"]  # Main first
    assert VOCDataset(root, "train", image_set="segmentation").names == ["2008_000003"]
    ds = VOCDataset(root, "train", image_set="Segmentation")
    assert ds.tasks == ["seg"]  # no listed image has an XML
    assert VOCDataset(root, "val").names == ["2008_000001", "2008_000003"]
    with pytest.raises(DataError, match=r"ImageSets/Main/val\.txt' not found"):
        VOCDataset(root, "val", image_set="Main")
    with pytest.raises(DataError, match="neither .*Main/test.txt.* nor .*Segmentation/test.txt"):
        VOCDataset(root, "test")
    with pytest.raises(DataError, match="image_set must be one of"):
        VOCDataset(root, "train", image_set="Layout")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_layout_errors(voc) -> None:
    root, _ = voc
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2008_000001\n2008_000009\n")
    with pytest.raises(DataError) as e:
        VOCDataset(root, "train")
    assert "JPEGImages/2008_000009.jpg' not found" in one_line(e)
    (sets / "train.txt").write_text("2008_000001 1\n")
    with pytest.raises(DataError) as e:
        VOCDataset(root, "train")
    assert "train.txt' line 1: expected one image name" in one_line(e)
    (sets / "train.txt").write_text("\n")
    with pytest.raises(DataError, match=r"split 'train': no images in '.*Main/train\.txt'"):
        VOCDataset(root, "train")
    (sets / "train.txt").write_text("2008_000001\n")
    (root / "Annotations" / "2008_000001.xml").unlink()
    (root / "SegmentationClass" / "2008_000001.png").unlink()
    with pytest.raises(DataError, match="'2008_000001' has neither"):
        VOCDataset(root, "train")
    with pytest.raises(DataError, match="JPEGImages' not found"):
        VOCDataset(root / "nowhere", "train")


@pytest.mark.parametrize("content, problem", [
    ("<annotation><object><name>dog</name>", "malformed XML"),
    ("<annotation><object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
     "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "class 'unicorn'"),
    ("<annotation><object><name>dog</name><bndbox><xmin>a</xmin><ymin>1</ymin>"
     "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "<xmin> is 'a'"),
    ("<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
     "<xmax>2</xmax></bndbox></object></annotation>", "has no <ymax>"),
    ("<annotation><object><name>dog</name></object></annotation>", "has no <bndbox>"),
    ("<annotation><object><name>dog</name><bndbox><xmin>5</xmin><ymin>1</ymin>"
     "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "empty box"),
    ("<annotation><object><name>dog</name><difficult>yes</difficult><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
     "<difficult> is 'yes'"),
    ("<annotation><size><width>10</width><height>48</height></size></annotation>",
     "gives size 10x48, its image is 64x48"),
    ("<notes/>", "root element is <notes>"),
])
def test_bad_xml(voc, content: str, problem: str) -> None:
    root, _ = voc
    (root / "Annotations" / "2008_000002.xml").write_text(content)
    ds = VOCDataset(root, "train")
    with pytest.raises(DataError) as e:
        ds.read(1)
    msg = one_line(e)
    assert "2008_000002.xml" in msg and problem in msg


def test_bad_masks(voc) -> None:
    root, arrays = voc
    obj_png = root / "SegmentationObject" / "2008_000001.png"
    cls_png = root / "SegmentationClass" / "2008_000001.png"
    ds = VOCDataset(root, "train", instance_masks=True)

    bad = arrays["obj1"].copy()
    bad[40:, :5] = 4  # the XML has 3 objects
    write_palette_png(obj_png, bad)
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert "2008_000001.png' has object index 4 but '2008_000001.xml' lists 3" in one_line(e)

    write_palette_png(obj_png, np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert "SegmentationObject/2008_000001.png' is 65x48, its image is 64x48" in one_line(e)

    obj_png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert f"cannot read mask '{obj_png}': not a decodable image" in one_line(e)
    write_palette_png(obj_png, arrays["obj1"])

    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 0] = 128  # colour, not indices
    Image.fromarray(colour).save(cls_png)
    with pytest.raises(DataError) as e:
        ds.read(0)
    assert "2008_000001.png': it has different colour channels" in one_line(e)

    out_of_range = arrays["cls1"].copy()
    out_of_range[0, 0] = 21
    write_palette_png(cls_png, out_of_range)
    with pytest.raises(DataError) as e:
        ds[0]
    assert "seg class id 21 out of range 0..20" in one_line(e)

    write_palette_png(cls_png, np.zeros((H + 2, W), np.uint8))
    with pytest.raises(DataError) as e:
        ds[0]
    assert "'2008_000001.jpg': seg map is 64x50, image is 64x48" in one_line(e)

    (root / "JPEGImages" / "2008_000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="2008_000002.jpg': not a decodable image"):
        ds.read(1)


def test_skip_invalid_warns(voc) -> None:
    root, _ = voc
    (root / "Annotations" / "2008_000002.xml").write_text("<annotation>")
    ds = VOCDataset(root, "train", skip_invalid=True)
    with pytest.warns(UserWarning, match="malformed XML"):
        sample = ds[1]
    assert sample["file_name"] == "2008_000003.jpg"
    assert ds.num_skipped == 1


# -- the shared VOC2012 samples (research terms: read in place, never copied) -----------------

def test_real_voc_samples(shared_data: Path) -> None:
    root = shared_data / "voc" / "samples" / "voc"
    ds = VOCDataset(root, "train", instance_masks=True)
    xmls = sorted((root / "Annotations").glob("*.xml"))
    assert len(ds) == len(xmls) == 2
    n_boxes = 0
    for i, xml in enumerate(xmls):
        assert ds.names[i] == xml.stem
        objs = ET.parse(xml).getroot().findall("object")
        expected = [[float(o.find("bndbox").findtext(t)) - off
                     for t, off in (("xmin", 1), ("ymin", 1), ("xmax", 0), ("ymax", 0))]
                    for o in objs]
        labels = [CLASSES.index(o.findtext("name").strip()) for o in objs]
        assert all(o.findtext("difficult") == "0" for o in objs)
        raw = ds.read(i)
        np.testing.assert_allclose(raw.boxes, expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(raw.labels, labels)
        assert len(raw.crowd_boxes) == 0
        n_boxes += len(raw.boxes)

        seg_png = root / "SegmentationClass" / f"{xml.stem}.png"
        obj_png = root / "SegmentationObject" / f"{xml.stem}.png"
        if seg_png.exists():
            seg = np.array(Image.open(seg_png))
            np.testing.assert_array_equal(raw.seg, seg)
            obj = np.array(Image.open(obj_png))
            np.testing.assert_array_equal(
                raw.instance_masks, np.stack([obj == k + 1 for k in range(len(objs))]))
            # Each object's mask carries its own class in SegmentationClass.
            for k, lab in enumerate(labels):
                assert set(np.unique(seg[obj == k + 1])) == {lab + 1}
        else:
            assert raw.seg is None and raw.instance_masks is None
    assert n_boxes == 3  # 2007_000063: dog, chair; 2011_003353: person
    raw = ds.read(0)
    assert int(raw.instance_masks[0].sum()) == 27632 and int(raw.instance_masks[1].sum()) == 78930
    assert int((raw.seg == 255).sum()) == 8714
