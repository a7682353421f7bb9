"""configs/benchmarks: every config loads and validates, and its heads fit the classes of the
data it names: real sample data where there is some, generated arrays in the MTAN layout
otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtvision.config import load_config
from mtvision.data.build import build_dataset, dataset_classes
from mtvision.engine.trainer import check_heads_match

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "benchmarks").glob("*.yaml"))


def _mtan_arrays(root: Path, dirs: dict[str, tuple[int, ...]], classes: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub, shape in dirs.items():
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            if sub == "image":
                a = rng.random(shape).astype(np.float32)
            elif sub.startswith("label"):
                a = rng.integers(-1, classes, shape).astype(np.float32)
            elif sub == "normal":
                a = rng.normal(size=shape).astype(np.float32)
                a /= np.linalg.norm(a, axis=2, keepdims=True)
            else:
                a = rng.random(shape).astype(np.float32) + 0.5
            np.save(root / split / sub / "0.npy", a)


def _data_overrides(name: str, tmp_path: Path, samples_dir: Path) -> list[str] | None:
    """Overrides pointing the config's data at something real (or MTAN-layout arrays)."""
    if name.startswith("nyuv2"):
        _mtan_arrays(tmp_path, {"image": (288, 384, 3), "label": (288, 384),
                                "depth": (288, 384), "normal": (288, 384, 3)}, 13)
        return [f"data.root={tmp_path}"]
    if name.startswith("cityscapes"):
        _mtan_arrays(tmp_path, {"image": (128, 256, 3), "label_7": (128, 256),
                                "depth": (128, 256, 1)}, 7)
        return [f"data.root={tmp_path}"]
    if name.startswith("coco"):
        coco = samples_dir / "coco"
        return [f"data.root={coco}", "data.train_split=s", "data.val_split=s",
                "data.options={ann_file: annotations.json, img_dir: images, derive_seg: true, "
                "derive_edges: instances, derive_cls: true}"]
    return None  # VOC: research-only data, read from the shared folder below


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_benchmark_config_fits_its_data(path: Path, tmp_path: Path, samples_dir: Path,
                                        request: pytest.FixtureRequest) -> None:
    cfg = load_config(path)
    overrides = _data_overrides(path.stem, tmp_path, samples_dir)
    if overrides is None:
        shared = request.getfixturevalue("shared_data")
        overrides = [f"data.root={shared / 'voc' / 'samples' / 'voc'}",
                     "data.options={image_set: null, derive_edges: seg, edge_thickness: 2}"]
    cfg = load_config(path, overrides)
    ds = build_dataset(cfg["data"], cfg["data"]["train_split"], train=True)
    assert set(cfg["model"]["heads"]) == set(ds.tasks)
    check_heads_match(cfg, dataset_classes(ds))
    sample = ds[0]
    h, w = cfg["data"]["image_size"]
    assert tuple(sample["image"].shape) == (3, h, w)
    assert set(sample["targets"]) <= set(ds.tasks)
