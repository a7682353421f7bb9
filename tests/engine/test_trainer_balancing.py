"""Every registered balancing method trains the demo model (tiny config) for a few steps in
each of its modes without NaN, and gradient methods log task interference and plot it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mtvision.balancing import GradientBalancer
from mtvision.engine.trainer import Trainer
from mtvision.registry import BALANCERS


def configurations() -> list[tuple[str, str | None]]:
    out = []
    for name in BALANCERS.names():
        cls = BALANCERS.get(name)
        if issubclass(cls, GradientBalancer):
            out += [(name, "param"), (name, "feature")]
        else:
            out.append((name, None))
    return out


@pytest.mark.parametrize(("name", "mode"), configurations())
def test_method_trains_the_demo_model(tiny_cfg, tmp_path, name, mode):
    balancer = {"name": name} if mode is None else {"name": name, "mode": mode}
    cfg = {**tiny_cfg, "balancer": balancer}
    tr = Trainer(cfg, tmp_path, progress=False)
    batch = next(iter(tr.train_loader))
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    for _ in range(2):
        out = tr.train_step(batch)
        assert out is not None, f"{name}/{mode}: step skipped"
        assert all(math.isfinite(float(v)) for v in out.values()), out
    changed = [k for k, v in tr.model.named_parameters() if not torch.equal(before[k], v)]
    assert any(k.startswith("backbone.") for k in changed)
    assert any(k.startswith("heads.") for k in changed)
    if mode is not None:
        cos = {k: float(v) for k, v in out.items() if k.startswith("cos/")}
        assert len(cos) == 6 and all(-1.0001 <= v <= 1.0001 for v in cos.values())


def test_interference_is_logged_and_plotted(tiny_cfg, tmp_path):
    cfg = {**tiny_cfg, "balancer": {"name": "mgda", "mode": "feature"},
           "train": {**tiny_cfg["train"], "max_iters": 3}}
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert train and set(train[-1]["cos"]) == {"det|seg", "det|edge", "det|cls", "seg|edge",
                                               "seg|cls", "edge|cls"}
    assert set(train[-1]["weights"]) == {"det", "seg", "edge", "cls"}
    assert (tmp_path / "interference.png").stat().st_size > 0
