"""Auxiliary tasks (model.aux_tasks): trained like the others, logged, but left out of the
score that picks the best checkpoint."""

from __future__ import annotations

import json
import math

import pytest

import mtvision.engine.trainer as trainer_mod
from mtvision.config import load_config
from mtvision.engine.evaluator import headline_score
from mtvision.engine.trainer import Trainer
from mtvision.registry import ConfigError

RESULTS = {"det": {"mAP": 0.4, "mAP50": 0.7}, "seg": {"mIoU": 0.6, "pixel_acc": 0.9},
           "edge": {"ODS": 0.8, "OIS": 0.85, "AP": 0.7}, "cls": {"top1": 0.9}}


def test_headline_score_leaves_out_aux_tasks():
    assert headline_score(RESULTS, "mean") == pytest.approx((0.4 + 0.6 + 0.8 + 0.9) / 4)
    assert headline_score(RESULTS, "mean", ["edge"]) == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert headline_score(RESULTS, "mean", ("edge", "det")) == pytest.approx((0.6 + 0.9) / 2)
    assert headline_score(RESULTS, "det.mAP50", ["edge"]) == pytest.approx(0.7)
    assert math.isnan(headline_score({"edge": RESULTS["edge"]}, "mean", ["edge"]))


def aux_cfg(repo_root, shapes_root, overrides_for, *extra: str) -> dict:
    return load_config(repo_root / "configs" / "demo.yaml",
                       [*overrides_for(shapes_root), "model.aux_tasks=[edge]", *extra])


def test_aux_task_trains_but_does_not_pick_the_best_checkpoint(
        repo_root, shapes_root, overrides_for, tmp_path, monkeypatch):
    tr = Trainer(aux_cfg(repo_root, shapes_root, overrides_for), tmp_path, progress=False)
    assert tr.model.aux_tasks == ["edge"] and tr.model.main_tasks == ["det", "seg", "cls"]
    out = tr.train_step(next(iter(tr.train_loader)))
    assert out is not None and "edge" in out and "w/edge" in out  # trained like the others

    # First evaluation: main tasks 0.5, edge 0.1; second: main 0.4, edge 0.99. With edge in
    # the mean the second would win ((3 * 0.4 + 0.99) / 4 > (3 * 0.5 + 0.1) / 4).
    evals = iter([
        {"det": {"mAP": 0.5}, "seg": {"mIoU": 0.5}, "cls": {"top1": 0.5}, "edge": {"ODS": 0.1}},
        {"det": {"mAP": 0.4}, "seg": {"mIoU": 0.4}, "cls": {"top1": 0.4}, "edge": {"ODS": 0.99}},
    ])
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: next(evals))
    tr.run_eval()
    first = (tmp_path / "best.pt").stat().st_mtime_ns
    tr.run_eval()
    assert tr.best_score == pytest.approx(0.5)
    assert (tmp_path / "best.pt").stat().st_mtime_ns == first
    tr.logger.close()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in records if r["type"] == "eval"]
    assert scores == pytest.approx([0.5, 0.4])
    assert all("edge" in r["metrics"] for r in records if r["type"] == "eval")  # logged


def test_best_metric_of_an_aux_task_is_an_error(repo_root, shapes_root, overrides_for, tmp_path):
    cfg = aux_cfg(repo_root, shapes_root, overrides_for, "train.best_metric=edge.ODS")
    with pytest.raises(ConfigError, match=r"best_metric 'edge\.ODS' names an auxiliary") as e:
        Trainer(cfg, tmp_path, progress=False)
    assert "\n" not in str(e.value)


def test_every_head_aux_is_an_error(repo_root, shapes_root, overrides_for):
    from mtvision.models import build_model

    cfg = aux_cfg(repo_root, shapes_root, overrides_for,
                  "model.aux_tasks=[det, seg, edge, cls]")
    with pytest.raises(ConfigError, match="lists every head"):
        build_model(cfg["model"])
