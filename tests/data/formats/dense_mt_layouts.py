"""Generated files in the layouts of the dense multi-task benchmarks (no real sample of them is
available here): PASCAL-Context MT (ASTMT / Multi-Task-Learning-PyTorch / ATRC / InvPT) and
NYUD-v2 MT (Multi-Task-Learning-PyTorch's ``.npy`` files or ATRC / InvPT's PNGs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io

PERSON, DOG = 15, 12
CHAIR, GROUND, PERSON_CTX = 72, 189, 284  # PASCAL-Context label ids (chair is normals-valid)


def _png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if a.ndim == 3:
        a = a[..., ::-1]  # RGB -> BGR for cv2
    assert cv2.imwrite(str(path), np.ascontiguousarray(a))


def _jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]),
                       [cv2.IMWRITE_JPEG_QUALITY, 95])


def pascal_part_mat(path: Path, objects: list[tuple[int, np.ndarray, list[tuple[str, np.ndarray]]]]
                    ) -> None:
    """A PASCAL-Part ``anno`` file: objects (class_ind, mask, [(part_name, mask), ...])."""
    obj_t = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    part_t = [("part_name", "O"), ("mask", "O")]
    objs = np.zeros((1, len(objects)), dtype=obj_t)
    for i, (cls, mask, parts) in enumerate(objects):
        objs[0, i]["class"] = "person" if cls == PERSON else "dog"
        objs[0, i]["class_ind"] = np.array([[cls]], dtype=np.uint8)
        objs[0, i]["mask"] = mask.astype(np.uint8)
        if parts:
            arr = np.zeros((1, len(parts)), dtype=part_t)
            for j, (name, m) in enumerate(parts):
                arr[0, j]["part_name"] = name
                arr[0, j]["mask"] = m.astype(np.uint8)
            objs[0, i]["parts"] = arr
        else:
            objs[0, i]["parts"] = np.zeros((0, 0))
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0]["imname"] = path.stem
    anno[0, 0]["objects"] = objs
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"anno": anno})


def make_pascal_mt(root: Path, splits: dict[str, int] | None = None,
                   hw: tuple[int, int] = (48, 64), seed: int = 0) -> dict[str, dict]:
    """PASCAL_MT files for every split (name -> number of images). Image k of a split: a person
    (rectangle) whose head and torso are annotated when k % 3 == 0; a person without parts when
    k % 3 == 1; a dog only when k % 3 == 2. Returns, per image name, what was written."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 3, "val": 3}
    h, w = hw
    truth: dict[str, dict] = {}
    (root / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        names = [f"20{10 + len(truth) // 100:02d}_{len(truth) + k:06d}" for k in range(n)]
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            kind = k % 3
            _jpg(root / "JPEGImages" / f"{name}.jpg",
                 rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            person = np.zeros(hw, bool)
            person[8:40, 10 + k:30 + k] = True
            head = np.zeros(hw, bool)
            head[8:16, 14 + k:26 + k] = True
            torso = person & ~head
            torso[30:, :] = False
            labels = np.full(hw, GROUND, np.int32)
            labels[:, 40:] = CHAIR
            labels[person] = PERSON_CTX
            scipy.io.savemat(str(_mkdir(root / "pascal-context" / "trainval") / f"{name}.mat"),
                             {"LabelMap": labels.astype(np.uint16)})
            seg = np.zeros(hw, np.uint8)
            seg[person] = PERSON
            seg[:, 40:] = 9  # chair
            seg[0, :] = 255
            sub = "VOC12" if k % 2 == 0 else "pascal-context"
            _png(root / "semseg" / sub / f"{name}.png", seg)
            if kind == 0:
                objects = [(PERSON, person, [("head", head), ("torso", torso)])]
            elif kind == 1:
                objects = [(PERSON, person, [])]
            else:
                objects = [(DOG, person, [])]
            pascal_part_mat(root / "human_parts" / f"{name}.mat", objects)
            normals = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            _png(root / "normals_distill" / f"{name}.png", normals)
            sal = np.where(person, 200, 60).astype(np.uint8)
            sal[0:4, 0:4] = 128  # 128 / 255 > 0.5: salient
            sal[4:8, 0:4] = 127  # not
            _png(root / "sal_distill" / f"{name}.png", sal)
            truth[name] = {"split": split, "labels": labels, "seg": seg, "person": person,
                           "head": head, "torso": torso, "kind": kind, "normals": normals,
                           "sal": sal}
    return truth


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def make_nyud_mt(root: Path, splits: dict[str, int] | None = None,
                 hw: tuple[int, int] = (48, 64), png: bool = False,
                 seed: int = 0) -> dict[str, dict]:
    """NYUD-v2 MT files. ``png``: ATRC / InvPT's form (PNG images, edges and normals) instead
    of Multi-Task-Learning-PyTorch's (JPEG images, .npy edges and normals)."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 2, "val": 2}
    h, w = hw
    truth: dict[str, dict] = {}
    _mkdir(root / "gt_sets")
    for split, n in splits.items():
        names = [f"{len(truth) + k:04d}" for k in range(n)]
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if png:
                _png(root / "images" / f"{name}.png", rgb)
            else:
                _jpg(root / "images" / f"{name}.jpg", rgb)
            seg = rng.integers(0, 41, hw).astype(np.uint8)  # 0 = unlabelled
            _png(root / "segmentation" / f"{name}.png", seg)
            depth = (rng.random(hw) * 5 + 0.5).astype(np.float32)
            depth[0, :5] = 0.0  # invalid
            np.save(_mkdir(root / "depth") / f"{name}.npy", depth)
            edge = np.zeros(hw, np.float32)
            edge[h // 2, :] = 1.0
            n3 = rng.normal(size=(h, w, 3)).astype(np.float32)
            n3 /= np.linalg.norm(n3, axis=2, keepdims=True)
            if png:
                _png(root / "edge" / f"{name}.png", (edge * 255).astype(np.uint8))
                enc = np.rint((n3 + 1.0) * 127.5).astype(np.uint8)
                enc[1, :3] = 0  # (0, 0, 0) decodes to a non-unit vector: invalid
                _png(root / "normals" / f"{name}.png", enc)
            else:
                np.save(_mkdir(root / "edge") / f"{name}.npy", edge)
                n3[1, :3] = 0.0
                np.save(_mkdir(root / "normals") / f"{name}.npy", n3)
            truth[name] = {"split": split, "rgb": rgb, "seg": seg, "depth": depth,
                           "edge": edge, "normals": n3}
    return truth
