"""MTVDataset, collate and the io helpers: sample format, partial labels, error reporting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtvision.data.collate import collate
from mtvision.data.formats.mtv import MTVDataset
from mtvision.data.io import DataError, read_image, read_mask, write_json_atomic
from mtvision.data.synthetic import generate_shapes
from mtvision.data.transforms import build_transforms
from mtvision.registry import DATASETS


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=6, num_val=3,
                           image_size=64, seed=0)


def _make_dataset(root: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
                  meta: dict[str, Any] | None = None,
                  categories: list[dict[str, Any]] | None = None, size: tuple[int, int] = (24, 32),
                  split: str = "train") -> Path:
    """A tiny hand-made dataset: random images, seg masks of class 1 and edges where asked."""
    h, w = size
    rng = np.random.default_rng(0)
    for sub in ("images", "semseg", "edges"):
        (root / sub / split).mkdir(parents=True, exist_ok=True)
    for im in images:
        cv2.imwrite(str(root / "images" / split / im["file_name"]),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        if "seg_file" in im:
            seg = np.zeros((h, w), np.uint8)
            seg[2:10, 3:12] = 1
            cv2.imwrite(str(root / im["seg_file"]), seg)
        if "edge_file" in im:
            edge = np.zeros((h, w), np.uint8)
            edge[2, 3:12] = 255
            cv2.imwrite(str(root / im["edge_file"]), edge)
        im.setdefault("height", h)
        im.setdefault("width", w)
    data = {
        "images": images, "annotations": annotations,
        "categories": categories if categories is not None else [{"id": 1, "name": "thing"}],
        "mtvision": meta if meta is not None else {
            "tasks": ["det", "seg", "edge", "cls"], "seg_classes": ["background", "thing"],
            "cls_classes": ["a", "b", "c"], "multi_label": False},
    }
    write_json_atomic(data, root / "annotations" / f"{split}.json")
    return root


def _full_image(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": i, "file_name": f"{i}.jpg", "seg_file": f"semseg/train/{i}.png",
            "edge_file": f"edges/train/{i}.png", "cls": 1, **extra}


# ----------------------------------------------------------------------------------------------


def test_sample_format_matches_files(shapes_root: Path) -> None:
    ds = MTVDataset(shapes_root, "val")
    coco = json.loads((shapes_root / "annotations/val.json").read_text())
    assert len(ds) == 3
    for i, info in enumerate(coco["images"]):
        s = ds[i]
        assert set(s) == {"image", "image_id", "file_name", "orig_size", "targets"}
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.uint8
        assert torch.equal(s["image"].permute(1, 2, 0), torch.from_numpy(
            read_image(shapes_root / "images" / "val" / info["file_name"])))
        assert (s["image_id"], s["file_name"], s["orig_size"]) == (info["id"], info["file_name"],
                                                                   (64, 64))
        t = s["targets"]
        assert set(t) == {"det", "seg", "edge", "cls"}
        anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
        expected = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
        assert t["det"]["boxes"].dtype == torch.float32 and t["det"]["labels"].dtype == torch.int64
        assert t["det"]["boxes"].tolist() == expected
        assert t["det"]["labels"].tolist() == [a["category_id"] - 1 for a in anns]
        seg = read_mask(shapes_root / info["seg_file"])
        assert t["seg"].dtype == torch.int64 and t["seg"].tolist() == seg.tolist()
        edge = read_mask(shapes_root / info["edge_file"]) >= 128
        assert t["edge"].dtype == torch.int64 and t["edge"].tolist() == edge.astype(int).tolist()
        assert t["cls"].dtype == torch.int64 and t["cls"].dim() == 0
        assert t["cls"].item() == info["cls"]


def test_class_lists_and_registry(shapes_root: Path) -> None:
    ds = DATASETS.build({"name": "mtvision", "root": str(shapes_root), "split": "train"})
    assert isinstance(ds, MTVDataset) and len(ds) == 6
    assert ds.det_classes == ["circle", "square", "triangle", "star"]
    assert ds.seg_classes == ["background", "circle", "square", "triangle", "star"]
    assert ds.cls_classes == ["stripes", "checker", "blobs", "gradient"]
    assert ds.multi_label is False and ds.tasks == ["det", "seg", "edge", "cls"]
    assert ds.num_classes == {"det": 4, "seg": 5, "edge": 1, "cls": 4}
    assert ds.cat_ids == [1, 2, 3, 4]


def test_transforms_letterbox_targets(shapes_root: Path) -> None:
    plain = MTVDataset(shapes_root, "train")[0]
    big = MTVDataset(shapes_root, "train", build_transforms(None, (96, 128), train=False))[0]
    assert big["image"].shape == (3, 96, 128) and big["orig_size"] == (64, 64)
    # 64 -> 96 (scale 1.5), centred horizontally: pad_left (128 - 96) / 2 = 16.
    expected = plain["targets"]["det"]["boxes"] * 1.5 + torch.tensor([16.0, 0, 16.0, 0])
    torch.testing.assert_close(big["targets"]["det"]["boxes"], expected)
    seg = big["targets"]["seg"]
    assert seg.shape == (96, 128) and (seg[:, :16] == 255).all() and (seg[:, -16:] == 255).all()
    assert set(big["targets"]["edge"].unique().tolist()) <= {0, 1, 255}


def test_category_remap_and_crowd(tmp_path: Path) -> None:
    root = _make_dataset(
        tmp_path, [_full_image(1)],
        [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 5, 6], "iscrowd": 0},
         {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 2, 5, 6], "iscrowd": 0},
         {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 20], "iscrowd": 1}],
        categories=[{"id": 7, "name": "b"}, {"id": 3, "name": "a"}])
    ds = MTVDataset(root, "train")
    assert ds.det_classes == ["a", "b"] and ds.cat_ids == [3, 7]
    det = ds[0]["targets"]["det"]
    assert det["labels"].tolist() == [1, 0]  # crowd box left out
    assert det["boxes"].tolist() == [[1, 2, 6, 8], [10, 2, 15, 8]]


def test_partial_labels_and_collate(tmp_path: Path) -> None:
    images = [
        _full_image(1),
        {"id": 2, "file_name": "2.jpg"},  # det only (no objects), no seg/edge/cls
        {"id": 3, "file_name": "3.jpg", "cls": 2, "edge_file": "edges/train/3.png"},
    ]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 2, 9, 8], "iscrowd": 0}]
    ds = MTVDataset(_make_dataset(tmp_path, images, anns), "train")
    samples = [ds[i] for i in range(3)]
    assert set(samples[1]["targets"]) == {"det"}
    assert samples[1]["targets"]["det"]["boxes"].shape == (0, 4)
    samples[2]["targets"].pop("det")  # as if det were unlabelled for this image

    batch = collate(samples)
    assert batch["images"].shape == (3, 3, 24, 32)
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["image_ids"].dtype == torch.int64
    assert batch["file_names"] == ["1.jpg", "2.jpg", "3.jpg"]
    assert batch["orig_sizes"] == [(24, 32)] * 3
    assert list(batch["targets"]) == ["det", "seg", "edge", "cls"]
    p = {k: v.tolist() for k, v in batch["present"].items()}
    assert p == {"det": [True, True, False], "seg": [True, False, False],
                 "edge": [True, False, True], "cls": [True, False, True]}
    t = batch["targets"]
    assert t["det"][0]["boxes"].tolist() == [[3, 2, 12, 10]]
    assert t["det"][2]["boxes"].shape == (0, 4) and t["det"][2]["labels"].shape == (0,)
    assert t["seg"].shape == (3, 24, 32) and t["seg"].dtype == torch.int64
    assert (t["seg"][1:] == 255).all() and t["seg"][0, 2:10, 3:12].eq(1).all()
    assert (t["edge"][1] == 255).all() and t["edge"][0, 2, 3:12].eq(1).all()
    assert t["cls"].tolist() == [1, -1, 2] and t["cls"].dtype == torch.int64


def test_multi_label_cls(tmp_path: Path) -> None:
    meta = {"tasks": ["cls"], "cls_classes": ["a", "b", "c"], "multi_label": True}
    images = [{"id": 1, "file_name": "1.jpg", "cls": [0, 2]}, {"id": 2, "file_name": "2.jpg"}]
    ds = MTVDataset(_make_dataset(tmp_path, images, [], meta=meta, categories=[]), "train")
    assert ds.tasks == ["cls"] and ds.multi_label
    batch = collate([ds[0], ds[1]])
    assert batch["targets"]["cls"].tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert batch["present"]["cls"].tolist() == [True, False]
    assert list(batch["targets"]) == ["cls"]


def test_dataloader_batches(shapes_root: Path) -> None:
    ds = MTVDataset(shapes_root, "train", build_transforms(
        [{"name": "HorizontalFlip", "p": 0.5}], (64, 64), train=True))
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["images"].shape == (4, 3, 64, 64)
    assert all(v.all() for v in batch["present"].values())


def test_collate_rejects_mixed_sizes(tmp_path: Path) -> None:
    a = {"image": torch.zeros(3, 8, 8), "image_id": 1, "file_name": "a", "orig_size": (8, 8),
         "targets": {}}
    b = {**a, "image": torch.zeros(3, 8, 9)}
    with pytest.raises(ValueError, match="one size"):
        collate([a, b])


# ----------------------------------------------------------------------------------------------
# Invalid data


def _bad_dataset(tmp_path: Path) -> tuple[Path, MTVDataset]:
    root = _make_dataset(tmp_path, [_full_image(1), _full_image(2), _full_image(3)], [])
    return root, MTVDataset(root, "train")


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root, ds = _bad_dataset(tmp_path)
    bad = root / "images/train/1.jpg"
    bad.write_bytes(b"this is not a jpeg \x00\x01\x02" * 10)
    with pytest.raises(DataError, match="not a decodable image") as info:
        ds[0]
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    bad.unlink()
    with pytest.raises(DataError, match=f"{bad}.*file not found"):
        ds[0]


@pytest.mark.parametrize("problem, match", [
    ("small_seg", "semseg/train/2.png' is 5x4, its image is 32x24"),
    ("seg_label", "semseg/train/2.png' has class id 9 out of range 0..1"),
    ("cls_label", "2.jpg' has cls label 5 out of range 0..2"),
    ("category", "2.jpg' has category_id 42"),
])
def test_invalid_labels_raise(tmp_path: Path, problem: str, match: str) -> None:
    root, _ = _bad_dataset(tmp_path)
    ann_file = root / "annotations/train.json"
    data = json.loads(ann_file.read_text())
    if problem == "small_seg":
        cv2.imwrite(str(root / "semseg/train/2.png"), np.zeros((4, 5), np.uint8))
    elif problem == "seg_label":
        cv2.imwrite(str(root / "semseg/train/2.png"), np.full((24, 32), 9, np.uint8))
    elif problem == "cls_label":
        data["images"][1]["cls"] = 5
    else:
        data["annotations"] = [{"id": 1, "image_id": 2, "category_id": 42, "bbox": [0, 0, 2, 2]}]
    write_json_atomic(data, ann_file)
    ds = MTVDataset(root, "train")
    ds[0]
    with pytest.raises(DataError, match=match):
        ds[1]


def test_skip_invalid_warns_and_counts(tmp_path: Path) -> None:
    root, _ = _bad_dataset(tmp_path)
    (root / "images/train/1.jpg").write_bytes(b"garbage")
    ds = MTVDataset(root, "train", skip_invalid=True)
    with pytest.warns(UserWarning, match=r"skipping invalid sample 0: .*images/train/1\.jpg"):
        s = ds[0]
    assert s["image_id"] == 2 and ds.num_skipped == 1
    assert ds[1]["image_id"] == 2 and ds.num_skipped == 1


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="annotations/nope.json' not found"):
        MTVDataset(tmp_path, "nope")


# ----------------------------------------------------------------------------------------------
# io helpers


def test_read_image_conversions(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert (read_image(tmp_path / "g.png") == grey[..., None]).all()

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 7  # B, R, alpha
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (3, 4, 3) and rgb[0, 0].tolist() == [200, 0, 10]

    deep = np.full((3, 4, 3), 65535, np.uint16)
    deep[..., 0] = 257 * 100
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [255, 255, 100]


def test_read_mask(tmp_path: Path) -> None:
    m = np.array([[0, 1], [2, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    assert (read_mask(tmp_path / "m.png") == m).all()
    cv2.imwrite(str(tmp_path / "c.png"), np.dstack([m, m * 0, m]))
    with pytest.raises(DataError, match="c.png'.*channels"):
        read_mask(tmp_path / "c.png")
    with pytest.raises(DataError, match="x.png'.*file not found"):
        read_mask(tmp_path / "x.png")


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json_atomic({"a": [1, 2]}, path)
    write_json_atomic({"a": 3}, path)
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_original_targets_on_request(shapes_root: Path) -> None:
    from mtvision.data.build import want_original_targets
    from mtvision.data.mixing import MixedDataset

    ds = MTVDataset(shapes_root, "train", build_transforms(None, (96, 128), train=False))
    assert "orig_targets" not in ds[0]
    mixed = MixedDataset([ds])
    want_original_targets(mixed)  # reaches the readers of a mixture
    sample = ds[0]
    # The labels as the files have them (64x64), next to the letterboxed targets (96x128).
    seg = read_mask(shapes_root / "semseg" / "train" / Path(sample["file_name"]).with_suffix(
        ".png").name)
    orig = sample["orig_targets"]
    assert set(orig) == {"seg"} and orig["seg"].dtype == torch.int64
    np.testing.assert_array_equal(orig["seg"].numpy(), seg)
    assert sample["targets"]["seg"].shape == (96, 128)
    other = MTVDataset(shapes_root, "train", build_transforms(None, (96, 128), train=False))[1]
    batch = collate([sample, other])
    assert batch["orig_targets"][0] is orig and batch["orig_targets"][1] is None
