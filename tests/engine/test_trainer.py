"""The training engine: schedule, a few real iterations, resume, end-to-end with the tools."""

import json
import math

import pytest
import torch

from mtvision.engine.optim import lr_factor
from mtvision.engine.trainer import Trainer


def test_lr_schedule_warmup_then_cosine():
    cfg = {"name": "cosine", "warmup_iters": 10, "warmup_factor": 0.1, "min_lr_ratio": 0.0}
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 110, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, 110, cfg) == pytest.approx(0.0, abs=1e-12)


def test_train_writes_run_files(tiny_cfg, tmp_path):
    work = tmp_path / "run"
    trainer = Trainer(tiny_cfg, work, progress=False)
    metrics = trainer.fit()
    assert set(metrics) == {"det", "seg", "edge", "cls"}
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "val_metrics.json",
                 "curves.png"):
        assert (work / name).is_file(), name
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if r["type"] == "train"]
    assert [r["iter"] for r in train_lines] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for r in train_lines for v in r["losses"].values())
    assert any(r["type"] == "eval" for r in lines)


def test_resume_matches_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "max_iters": 8, "deterministic": True}}
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.fit()

    # Interrupt a second run in the first step of epoch 2, after epoch 1's checkpoint.
    cut = Trainer(cfg, tmp_path / "cut", progress=False)
    real_step = Trainer.train_step

    def step(self, batch):
        if self.iteration == 5:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = Trainer(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed.iteration == 4
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_tools_end_to_end(shapes_root, tmp_path, repo_root, overrides_for):
    from tools import eval as eval_tool
    from tools import infer as infer_tool
    from tools import train as train_tool

    work = tmp_path / "e2e"
    over = sum((["-o", o] for o in overrides_for(shapes_root, iters=3)), [])
    cfg = str(repo_root / "configs" / "demo.yaml")
    assert train_tool.main([cfg, "--work-dir", str(work), "--no-progress", *over]) == 0
    out = tmp_path / "metrics.json"
    assert eval_tool.main([cfg, str(work / "best.pt"), "--out", str(out), "--no-progress",
                           *over]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"det", "seg", "edge", "cls"}
    for task, keys in {"det": ["mAP", "mAP50"], "seg": ["mIoU", "pixel_acc"],
                       "edge": ["ODS", "OIS", "AP"], "cls": ["top1"]}.items():
        for k in keys:
            assert 0.0 <= res[task][k] <= 1.0

    image = sorted((shapes_root / "images" / "val").iterdir())[0]
    assert infer_tool.main([str(work / "best.pt"), str(image), "--out",
                            str(tmp_path / "inf_img")]) == 0
    records = [json.loads(x) for x in (tmp_path / "inf_img" / "predictions.jsonl")
               .read_text().splitlines()]
    assert len(records) == 1

    from mtvision.data.io import read_image
    from mtvision.inference import write_video

    frames = [read_image(p) for p in sorted((shapes_root / "images" / "val").iterdir())]
    video = write_video(frames, tmp_path / "v.mp4", fps=2)
    assert infer_tool.main([str(work / "best.pt"), str(video), "--out",
                            str(tmp_path / "inf_vid")]) == 0
    records = (tmp_path / "inf_vid" / "predictions.jsonl").read_text().splitlines()
    assert len(records) == len(frames)


def test_train_tool_reports_config_error_in_one_line(tmp_path, capsys, repo_root):
    from tools import train as train_tool

    rc = train_tool.main([str(repo_root / "configs" / "demo.yaml"), "-o", "train.epohcs=2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'epochs'" in err
