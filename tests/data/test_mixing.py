"""Mixed datasets: each feeds some tasks, drawn by ratio; presence flags; config checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from mtvision.config import load_config
from mtvision.data.build import build_dataset, build_loader, check_data_config
from mtvision.data.mixing import MixedDataset, MixedSampler
from mtvision.registry import ConfigError


def _mixed_cfg(root: Path, ratios: list[float] | None) -> dict:
    entries = [
        {"type": "mtvision", "root": str(root), "tasks": ["det", "seg"]},
        {"type": "mtvision", "root": str(root), "tasks": ["edge"], "val_split": None},
        {"type": "mtvision", "root": str(root), "tasks": ["cls"]},
    ]
    if ratios:
        for e, r in zip(entries, ratios, strict=True):
            e["ratio"] = r
    return {"type": "mtvision", "root": "unused", "options": {}, "datasets": entries,
            "train_split": "train", "val_split": "val", "image_size": [64, 64],
            "train_transforms": [], "skip_invalid": False, "synthetic": None}


def test_sampler_follows_ratios_and_resumes_exactly() -> None:
    s = MixedSampler([10, 100, 5], [0.5, 0.25, 0.25], seed=3, length=4000)
    s.set_epoch(2)
    order = s.order(2)
    which = Counter(0 if i < 10 else (1 if i < 110 else 2) for i in order)
    # Binomial(4000, p): 4 standard deviations is about 0.03 of the length.
    assert abs(which[0] / 4000 - 0.5) < 0.035 and abs(which[2] / 4000 - 0.25) < 0.03
    # Each dataset is walked in whole shuffled passes: dataset 2 (5 samples) evenly repeated.
    d2 = Counter(i for i in order if i >= 110)
    assert max(d2.values()) - min(d2.values()) <= 1
    s.set_epoch(2, start=1234)
    assert list(s) == order[1234:]
    assert s.order(3) != order


def test_mixed_dataset_presence_and_classes(shapes_root: Path) -> None:
    ds = build_dataset(_mixed_cfg(shapes_root, [2, 1, 1]), None, train=True)
    assert isinstance(ds, MixedDataset) and len(ds) == 3 * 16
    assert ds.tasks == ["det", "seg", "edge", "cls"]
    loader = build_loader(ds, batch_size=6, num_workers=0, train=True, seed=0)
    assert isinstance(loader.sampler, MixedSampler)
    seen = {t: 0 for t in ds.tasks}
    for batch in loader:
        for task, flags in batch["present"].items():
            seen[task] += int(flags.sum())
        # A sample of the edge-only dataset carries only the edge label: the others are absent.
        det, edge = batch["present"].get("det"), batch["present"].get("edge")
        if det is not None and edge is not None:
            assert not bool((det & edge).any())
    assert all(seen[t] > 0 for t in ds.tasks)
    # Evaluation leaves out the entry without a val split, and draws no ratios.
    val = build_dataset(_mixed_cfg(shapes_root, [2, 1, 1]), None, train=False)
    assert len(val) == 2 * 4 and val.ratios is None and "edge" not in val.tasks


def test_mixed_config_errors(shapes_root: Path) -> None:
    cfg = _mixed_cfg(shapes_root, [1, 1, 1])
    cfg["datasets"][1]["ratio"] = 0
    with pytest.raises(ConfigError, match=r"datasets\[1\].ratio' must be a number > 0"):
        check_data_config(cfg)
    cfg = _mixed_cfg(shapes_root, None)
    cfg["datasets"][0]["ratio"] = 1
    with pytest.raises(ConfigError, match="give every dataset a ratio, or none"):
        check_data_config(cfg)
    cfg = _mixed_cfg(shapes_root, None)
    cfg["datasets"][2]["tsks"] = ["cls"]
    with pytest.raises(ConfigError, match=r"unknown key 'data.datasets\[2\].tsks'.*tasks"):
        check_data_config(cfg)
    cfg = _mixed_cfg(shapes_root, None)
    cfg["datasets"][0]["options"] = {"derive_sge": True}
    with pytest.raises(ConfigError, match="unknown option .*derive_sge.*derive_seg"):
        check_data_config(cfg)
    cfg = _mixed_cfg(shapes_root, None)
    cfg["datasets"][0]["tasks"] = ["depth"]
    with pytest.raises(Exception, match="cannot feed tasks"):
        build_dataset(cfg, None, train=True)


def test_classes_must_agree_between_datasets_feeding_a_task(shapes_root: Path) -> None:
    single = _mixed_cfg(shapes_root, None) | {"datasets": [], "root": str(shapes_root)}
    a = build_dataset(single, "train", train=False)
    b = build_dataset(single, "train", train=False)
    b.det_classes = list(reversed(b.det_classes))
    with pytest.raises(ConfigError, match="det classes differ"):
        MixedDataset([a, b], ["first", "second"])


def test_mixed_config_trains_the_demo_model(shapes_root: Path, overrides_for, repo_root: Path,
                                            tmp_path: Path) -> None:
    from mtvision.engine.evaluator import PRIMARY
    from mtvision.engine.trainer import Trainer

    mix = ("data.datasets=["
           f"{{type: mtvision, root: '{shapes_root}', tasks: [det, seg], ratio: 2}}, "
           f"{{type: mtvision, root: '{shapes_root}', tasks: [edge], ratio: 1}}, "
           f"{{type: mtvision, root: '{shapes_root}', tasks: [cls], ratio: 1}}]")
    cfg = load_config(repo_root / "configs" / "demo.yaml",
                      [*overrides_for(shapes_root, iters=3), mix, "data.synthetic=null"])
    trainer = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    metrics = trainer.fit()
    assert set(metrics) == {"det", "seg", "edge", "cls"}
    for task, key in ((t, PRIMARY[t]) for t in metrics):
        assert torch.isfinite(torch.tensor(float(metrics[task][key]))), (task, metrics[task])
