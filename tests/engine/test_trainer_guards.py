"""What the trainer refuses or survives: unlabelled batches, non-finite values, mismatched
classes, bad intervals and metric names, stale log records."""

import json
import math

import pytest
import torch

from mtvision.config import load_config
from mtvision.engine.trainer import Trainer, TrainingError
from mtvision.registry import ConfigError


def batch_of(trainer):
    return next(iter(trainer.train_loader))


def params(trainer):
    # Parameters only: a forward pass in train mode updates BatchNorm statistics anyway.
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def unchanged(before, trainer):
    return all(torch.equal(before[k], v) for k, v in trainer.model.named_parameters())


def test_batch_without_labels_for_the_model_is_skipped(tiny_cfg, tmp_path):
    tr = Trainer(tiny_cfg, tmp_path, progress=False)
    batch = batch_of(tr)
    batch["present"] = {t: torch.zeros_like(p) for t, p in batch["present"].items()}
    before = params(tr)
    assert tr.train_step(batch) is None
    assert unchanged(before, tr)


def test_nonfinite_loss_skips_then_stops(tiny_cfg, tmp_path, monkeypatch):
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "max_nonfinite_steps": 3}}
    tr = Trainer(cfg, tmp_path, progress=False)
    head = tr.model.heads["seg"]
    # Both the per-head and the fused seg+edge loss paths end in loss_from_dense.
    real = head.loss_from_dense
    monkeypatch.setattr(head, "loss_from_dense", lambda v: {"ce": real(v)["ce"] * math.nan})
    batch = batch_of(tr)
    before = params(tr)
    with pytest.warns(UserWarning, match="non-finite loss in task\\(s\\) seg"):
        assert tr.train_step(batch) is None
        assert tr.train_step(batch) is None
    assert unchanged(before, tr)
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="3 steps in a row"):
        tr.train_step(batch)


def test_nonfinite_gradient_never_reaches_the_optimizer(tiny_cfg, tmp_path, monkeypatch):
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "grad_clip": None}}
    tr = Trainer(cfg, tmp_path, progress=False)
    real = tr.balancer.backward

    def poisoned(*a, **k):
        out = real(*a, **k)
        next(iter(tr.model.parameters())).grad.fill_(math.inf)
        return out

    monkeypatch.setattr(tr.balancer, "backward", poisoned)
    before = params(tr)
    with pytest.warns(UserWarning, match="non-finite gradient"):
        assert tr.train_step(batch_of(tr)) is None
    assert unchanged(before, tr)
    assert not tr.optimizer.state  # AdamW's moments were never touched


def test_val_classes_must_match_train(tiny_cfg, shapes_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "val.json"
    data = json.loads(ann.read_text())
    data["mtvision"]["cls_classes"] = list(reversed(data["mtvision"]["cls_classes"]))
    ann.write_text(json.dumps(data))
    cfg = {**tiny_cfg, "data": {**tiny_cfg["data"], "root": str(root), "synthetic": None}}
    with pytest.raises(ConfigError, match="cls classes differ between split 'train'"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_bad_settings_are_config_errors(repo_root, shapes_root, overrides_for, tmp_path):
    demo = repo_root / "configs" / "demo.yaml"
    over = overrides_for(shapes_root)
    with pytest.raises(ConfigError, match=r"train\.eval_interval.*>= 1"):
        load_config(demo, [*over, "train.eval_interval=0"])
    with pytest.raises(ConfigError, match=r"num_convs.*must be int.*float"):
        load_config(demo, [*over, "model.heads.det.num_convs=2.5"])
    cfg = load_config(demo, [*over, "train.best_metric=seg.miou"])
    tr = Trainer(cfg, tmp_path / "r1", progress=False)
    with pytest.raises(ConfigError, match=r"'seg\.miou' is not among.*seg\.mIoU"):
        tr.run_eval()
    with pytest.raises(ConfigError, match="best_metric 'depth.rmse'"):
        Trainer(load_config(demo, [*over, "train.best_metric=depth.rmse"]), tmp_path / "r2",
                progress=False)


def test_neck_null_means_no_neck(repo_root, shapes_root, overrides_for):
    cfg = load_config(repo_root / "configs" / "demo.yaml",
                      [*overrides_for(shapes_root), "model.neck=null"])
    assert cfg["model"]["neck"] is None
    with pytest.raises(ConfigError, match=r"asks for feature 'p3'.*available: c1"):
        from mtvision.models import build_model

        build_model(cfg["model"])


def test_fresh_run_starts_a_new_log_and_resume_drops_stale_records(tiny_cfg, tmp_path):
    work = tmp_path / "run"
    Trainer(tiny_cfg, work, progress=False).fit()
    log = work / "metrics.jsonl"
    n = len(log.read_text().splitlines())
    with log.open("a") as f:  # records of an interrupted continuation past the checkpoint
        f.write(json.dumps({"type": "train", "iter": 99, "losses": {}}) + "\n")
    Trainer(tiny_cfg, work, resume=True, progress=False)
    assert len(log.read_text().splitlines()) == n
    Trainer(tiny_cfg, work, progress=False)
    assert log.read_text() == ""
