"""configs/benchmarks: every config loads and validates, and its heads fit the classes of the
data it names: real sample data where there is some, generated files in the documented layout
otherwise (MTAN's arrays, PASCAL-Context MT, NYUD-v2 MT). The dense multi-task benchmarks
(PASCAL-Context, NYUD-v2) also train for two steps, shrunk, on their generated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtvision.config import load_config
from mtvision.data.build import build_dataset, dataset_classes
from mtvision.engine.checks import check_heads_match
from tests.data.formats.dense_mt_layouts import make_nyud_mt, make_pascal_mt

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
    if name.startswith("pascal_mt"):
        make_pascal_mt(tmp_path)
        return [f"data.root={tmp_path}"]
    if name.startswith("nyud_mt"):
        make_nyud_mt(tmp_path)
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


DENSE_MT = [p for p in CONFIGS if p.stem.startswith(("pascal_mt", "nyud_mt"))]

# The benchmark configs shrunk to seconds on the CPU: small images and batches, two steps, the
# backbone's weights frozen (its forward pass still runs; the backward pass and the optimizer
# over its 20-odd million weights were most of the time).
SHRINK = ["data.image_size=[64, 64]", "data.batch_size=2", "data.val_batch_size=2",
          "data.num_workers=0", "model.neck.channels=16", "model.backbone.frozen_stages=4",
          "train.max_iters=2",
          "train.scheduler.warmup_iters=1", "train.log_interval=1", "train.tensorboard=false",
          "eval.edge_thresholds=5", "eval.sal_thresholds=5"]


@pytest.mark.parametrize("path", DENSE_MT, ids=[p.stem for p in DENSE_MT])
def test_dense_mt_config_trains_two_steps(path: Path, tmp_path: Path, samples_dir: Path,
                                          repo_root: Path, capsys: pytest.CaptureFixture
                                          ) -> None:
    from mtvision.engine.trainer import train

    data = _data_overrides(path.stem, tmp_path / "data", samples_dir)
    cfg = load_config(path, [*data, *SHRINK])
    work = tmp_path / "run"
    metrics = train(cfg, work, device="cpu", progress=False)
    heads = set(cfg["model"]["heads"])
    assert heads <= set(metrics)
    assert (work / "last.pt").is_file()
    if "sal" in heads:
        assert 0.0 <= metrics["sal"]["maxF"] <= 1.0 and 0.0 <= metrics["sal"]["mIoU"] <= 1.0
        assert 0.0 <= metrics["parts"]["mIoU"] <= 1.0
    if path.stem != "pascal_mt_resnet50":
        return
    # tools/eval.py scores the checkpoint against the published InvPT numbers (Delta_m).
    from tools import eval as eval_tool

    published = repo_root / "configs" / "benchmarks" / "published" / "pascal_mt_invpt.yaml"
    out = tmp_path / "metrics.json"
    args = [str(path), str(work / "last.pt"), "--out", str(out), "--device", "cpu",
            "--no-progress", "--baselines", str(published),
            *sum((["-o", o] for o in [*data, *SHRINK]), [])]
    assert eval_tool.main(args) == 0
    assert "Delta_m over the single-task baselines" in capsys.readouterr().out
    import json

    res = json.loads(out.read_text())
    assert set(res["delta_m"]["tasks"]) == heads
    assert res["delta_m"]["metrics"]["sal"] == ["maxF"]
    assert res["delta_m"]["metrics"]["edge"] == ["ODS"]
