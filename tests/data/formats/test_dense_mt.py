"""PASCAL-Context MT and NYUD-v2 MT readers on generated files in their documented layouts (no
real sample of either benchmark is available here)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.morphology import thin

from mtvision.data.collate import collate
from mtvision.data.formats.nyud_mt import NYUD40_CLASSES, NYUDMTDataset
from mtvision.data.formats.pascal_mt import PARTS_CLASSES, PascalMTDataset
from mtvision.data.io import DataError
from tests.data.formats.dense_mt_layouts import make_nyud_mt, make_pascal_mt, pascal_part_mat


@pytest.fixture(scope="module")
def pascal(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pascal_mt")
    return root, make_pascal_mt(root)


def _by_name(ds: PascalMTDataset, truth: dict) -> list[tuple[dict, dict]]:
    return [(ds[i], truth[ds.names[i]]) for i in range(len(ds))]


def test_pascal_tasks_classes_and_ids(pascal) -> None:
    root, _ = pascal
    ds = PascalMTDataset(root, "val")
    assert ds.tasks == ["seg", "edge", "normals", "parts", "sal"]
    assert ds.num_classes == {"seg": 21, "edge": 1, "normals": 1, "parts": 7, "sal": 1}
    assert ds.parts_classes == list(PARTS_CLASSES)
    assert ds[0]["image_id"] == int(ds.names[0].replace("_", ""))


def test_pascal_labels(pascal) -> None:
    root, truth = pascal
    for sample, t in _by_name(PascalMTDataset(root, "train"), truth):
        tg = sample["targets"]
        # Segmentation from semseg/VOC12 or semseg/pascal-context, as stored (255 kept).
        np.testing.assert_array_equal(tg["seg"].numpy(), t["seg"])
        # Saliency: v / 255 > 0.5.
        np.testing.assert_array_equal(tg["sal"].numpy(), (t["sal"] >= 128).astype(np.int64))
        assert tg["sal"][0, 0] == 1 and tg["sal"][4, 0] == 0
        # Edges: the thinned non-zero 4-neighbour Laplacian of the context labels (OpenCV's
        # Laplacian and skimage's thinning as the reference).
        lap = cv2.Laplacian(t["labels"].astype(np.float64), cv2.CV_64F)
        ref = thin(np.abs(lap) > 0)
        np.testing.assert_array_equal(tg["edge"].numpy(), ref.astype(np.int64))
        assert len(sample["edge_gts"]) == 1
        np.testing.assert_array_equal(sample["edge_gts"][0], ref)
        # Normals: 2 v / 255 - 1 where the context label is an NYU class (chair, person),
        # zero on "ground".
        n = tg["normals"].numpy().transpose(1, 2, 0)
        expect = 2 * t["normals"].astype(np.float32) / 255 - 1
        valid = t["labels"] != 189
        np.testing.assert_allclose(n[valid], expect[valid], atol=1e-6)
        assert (n[~valid] == 0).all() and valid.any() and (~valid).any()
        # Human parts: only where a person has part annotations.
        if t["kind"] == 0:
            parts = np.zeros_like(t["seg"], dtype=np.int64)
            parts[t["torso"]] = 2
            parts[t["head"]] = 1
            np.testing.assert_array_equal(tg["parts"].numpy(), parts)
        else:
            assert "parts" not in tg


def test_pascal_parts_present_flags_in_a_batch(pascal) -> None:
    root, _ = pascal
    ds = PascalMTDataset(root, "train", tasks=["parts", "sal"])
    assert ds.tasks == ["parts", "sal"]
    batch = collate([ds[i] for i in range(3)])
    assert batch["present"]["parts"].tolist() == [True, False, False]
    assert batch["present"]["sal"].tolist() == [True, True, True]
    assert (batch["targets"]["parts"][1:] == 255).all()
    assert set(batch["targets"]) == {"parts", "sal"}


def test_pascal_missing_task_folder_leaves_the_task_out(tmp_path: Path) -> None:
    make_pascal_mt(tmp_path, {"val": 1})
    for sub in ("human_parts", "sal_distill"):
        for p in (tmp_path / sub).iterdir():
            p.unlink()
        (tmp_path / sub).rmdir()
    ds = PascalMTDataset(tmp_path, "val")
    assert ds.tasks == ["seg", "edge", "normals"]
    with pytest.raises(DataError, match="cannot feed tasks"):
        PascalMTDataset(tmp_path, "val", tasks=["sal"])


def test_pascal_errors(tmp_path: Path) -> None:
    truth = make_pascal_mt(tmp_path, {"val": 2})
    name = sorted(truth)[1]
    (tmp_path / "sal_distill" / f"{name}.png").unlink()
    with pytest.raises(DataError, match=rf"sal_distill/{name}\.png' not found"):
        PascalMTDataset(tmp_path, "val")
    with pytest.raises(DataError, match="split list .*train.txt' not found"):
        PascalMTDataset(tmp_path, "train")


def test_pascal_bad_part_name_and_bad_mat(tmp_path: Path) -> None:
    truth = make_pascal_mt(tmp_path, {"val": 1})
    name = next(iter(truth))
    mask = truth[name]["person"]
    pascal_part_mat(tmp_path / "human_parts" / f"{name}.mat", [(15, mask, [("tail", mask)])])
    ds = PascalMTDataset(tmp_path, "val", tasks=["parts"])
    with pytest.raises(DataError, match="'tail', not a PASCAL-Part person part"):
        ds[0]
    (tmp_path / "human_parts" / f"{name}.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=f"human parts .*{name}.mat': not a readable .mat"):
        ds[0]


@pytest.mark.parametrize("png", [False, True], ids=["mtl_pytorch_npy", "atrc_invpt_png"])
def test_nyud_labels(tmp_path: Path, png: bool) -> None:
    truth = make_nyud_mt(tmp_path, png=png)
    ds = NYUDMTDataset(tmp_path, "val")
    assert ds.tasks == ["seg", "edge", "depth", "normals"]
    assert ds.num_classes["seg"] == 40 and ds.seg_classes == list(NYUD40_CLASSES)
    assert ds.names == ["0002", "0003"] and ds[0]["image_id"] == 2
    for i, name in enumerate(ds.names):
        t = truth[name]
        sample = ds[i]
        tg = sample["targets"]
        seg = t["seg"].astype(np.int64) - 1
        seg[seg < 0] = 255
        np.testing.assert_array_equal(tg["seg"].numpy(), seg)
        np.testing.assert_allclose(tg["depth"].numpy(), t["depth"])
        np.testing.assert_array_equal(tg["edge"].numpy(), t["edge"].astype(np.int64))
        np.testing.assert_array_equal(sample["edge_gts"][0], t["edge"] > 0)
        n = tg["normals"].numpy().transpose(1, 2, 0)
        assert (n[1, :3] == 0).all()  # invalid pixels
        keep = np.ones(n.shape[:2], bool)
        keep[1, :3] = False
        # PNG normals are quantised to 8 bits (and renormalised): within 1/127.5 per component.
        np.testing.assert_allclose(n[keep], t["normals"][keep], atol=1 / 127 if png else 1e-6)
        if png:
            np.testing.assert_allclose(np.linalg.norm(n[keep], axis=1), 1.0, atol=1e-5)


def test_nyud_errors(tmp_path: Path) -> None:
    make_nyud_mt(tmp_path)
    (tmp_path / "depth" / "0001.npy").unlink()
    with pytest.raises(DataError, match=r"depth/0001\.npy' not found"):
        NYUDMTDataset(tmp_path, "train")
    bad = np.full((48, 64), 41, np.uint8)
    assert cv2.imwrite(str(tmp_path / "segmentation" / "0002.png"), bad)
    ds = NYUDMTDataset(tmp_path, "val", tasks=["seg"])
    with pytest.raises(DataError, match="has label 41, expected 0..40"):
        ds[0]
    np.save(tmp_path / "normals" / "0003.npy", np.full((48, 64, 3), 2.0, np.float32))
    ds = NYUDMTDataset(tmp_path, "val", tasks=["normals"])
    with pytest.raises(DataError, match="outside \\[-1, 1\\]"):
        ds[1]


def test_nyud_letterboxed_batch(tmp_path: Path) -> None:
    from mtvision.data.transforms import build_transforms

    make_nyud_mt(tmp_path)
    ds = NYUDMTDataset(tmp_path, "train", transforms=build_transforms(None, (64, 64), False))
    batch = collate([ds[0], ds[1]])
    assert batch["images"].shape == (2, 3, 64, 64)
    # Letterbox padding: ignored in the masks, invalid in depth and normals.
    assert (batch["targets"]["seg"][:, :8] == 255).all()
    assert (batch["targets"]["depth"][:, :8] == 0).all()
    assert torch.equal(batch["present"]["depth"], torch.tensor([True, True]))


def test_validate_counts_the_labelled_tasks(tmp_path: Path) -> None:
    from mtvision.data.convert.validate import validate_dataset

    truth = make_pascal_mt(tmp_path, {"val": 3})
    bad = sorted(truth)[2]
    pascal_part_mat(tmp_path / "human_parts" / f"{bad}.mat",
                    [(15, truth[bad]["person"], [("wing", truth[bad]["person"])])])
    report = validate_dataset(tmp_path, "pascal_mt", "val", progress=False)
    assert report["valid_images"] == 2 and report["problems_total"] == 1
    assert "'wing', not a PASCAL-Part person part" in report["problems"][0]["problem"]
    # Image 0 has annotated people, image 1 a person without parts (no parts label).
    assert report["stats"]["tasks"] == {"seg": 2, "edge": 2, "normals": 2, "parts": 1, "sal": 2}
