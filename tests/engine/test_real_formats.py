"""End to end on real formats: the demo model trains on COCO (det + derived seg) mixed with a
BSDS500-layout edge set and an image folder, and tools/eval.py scores COCO as COCO does."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from mtvision.config import load_config
from mtvision.engine.evaluator import PRIMARY, evaluate_checkpoint
from mtvision.engine.trainer import Trainer


def _bsds(root: Path, split: str, n: int) -> None:
    """A BSR-layout edge set: each image with 3 annotators' boundary maps."""
    data = root / "BSDS500" / "data"
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        (data / "images" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / "images" / split / f"{100 + i}.jpg"), img)
        cell = np.empty((1, 3), dtype=object)
        for k in range(3):
            b = np.zeros((48, 64), np.uint8)
            b[10 + k, :] = 1
            b[:, 20 + i] = 1
            s = np.empty((1, 1), dtype=[("Segmentation", "O"), ("Boundaries", "O")])
            s[0, 0]["Segmentation"] = np.ones((48, 64), np.uint16)
            s[0, 0]["Boundaries"] = b
            cell[0, k] = s
        (data / "groundTruth" / split).mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(data / "groundTruth" / split / f"{100 + i}.mat"),
                         {"groundTruth": cell})


def _folder(root: Path, split: str) -> None:
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            cv2.imwrite(str(root / split / cls / f"{i}.png"),
                        rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))


def test_mixed_real_formats_train_and_coco_eval(tmp_path: Path, repo_root: Path,
                                                samples_dir: Path) -> None:
    coco = samples_dir / "coco"
    _bsds(tmp_path / "bsr", "train", 3)
    _bsds(tmp_path / "bsr", "val", 2)
    _folder(tmp_path / "folder", "train")
    _folder(tmp_path / "folder", "val")
    coco_entry = (f"{{type: coco, root: '{coco}', train_split: s, val_split: s, "
                  "options: {ann_file: annotations.json, img_dir: images, derive_seg: true}, "
                  "tasks: [det, seg], ratio: 2}")
    overrides = [
        "data.datasets=["
        f"{coco_entry}, "
        f"{{type: bsds500, root: '{tmp_path / 'bsr'}', tasks: [edge], ratio: 1}}, "
        f"{{type: image_folder, root: '{tmp_path / 'folder'}', tasks: [cls], ratio: 1}}]",
        "data.synthetic=null", "data.image_size=[64, 64]", "data.batch_size=4",
        "data.num_workers=0", "model.neck.channels=32", "model.heads.det.num_classes=80",
        "model.heads.seg.num_classes=81", "model.heads.cls.num_classes=2",
        "model.heads.seg.class_weights=null", "train.max_iters=3",
        "train.scheduler.warmup_iters=1", "train.tensorboard=false", "eval.edge_thresholds=5",
    ]
    cfg = load_config(repo_root / "configs" / "demo.yaml", overrides)
    trainer = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    metrics = trainer.fit()
    assert set(metrics) == {"det", "seg", "edge", "cls"}
    for task, key in ((t, PRIMARY[t]) for t in metrics):
        assert np.isfinite(metrics[task][key])

    # tools/eval.py on the COCO data alone: the official evaluation from a results file.
    coco_cfg = load_config(repo_root / "configs" / "demo.yaml", [
        *overrides[1:], "data.datasets=[]", "data.type=coco", f"data.root={coco}",
        "data.options={ann_file: annotations.json, img_dir: images, derive_seg: true}",
        "data.val_split=s"])
    out = tmp_path / "eval" / "metrics.json"
    res = evaluate_checkpoint(coco_cfg, str(tmp_path / "run" / "last.pt"), str(out),
                              device="cpu", progress=False)
    assert {"AP", "AP50", "AR100", "per_class"} <= set(res["det"]["coco"])
    results = json.loads((tmp_path / "eval" / "metrics_coco_results.json").read_text())
    declared = {c["id"] for c in json.loads((coco / "annotations.json").read_text())["categories"]}
    # Category ids are COCO's own (1..90 with gaps), not the contiguous labels.
    assert results and {r["category_id"] for r in results} <= declared
    assert json.loads(out.read_text())["det"]["coco"]["AP"] == res["det"]["coco"]["AP"]
