"""Single-task baselines (tools/train.py --single-task-baselines), Delta_m in tools/eval.py,
and the direction-aware checkpoint score."""

from __future__ import annotations

import json

import pytest

from mtvision.engine.baselines import baseline_tasks, single_task_config
from mtvision.engine.evaluator import add_delta_m, format_table, summary_score
from mtvision.metrics.baselines import load_baselines
from mtvision.registry import ConfigError


def test_single_task_config(tiny_cfg):
    tiny_cfg["train"]["best_metric"] = "seg.mIoU"
    tiny_cfg["balancer"] = {"name": "uncertainty"}
    seg = single_task_config(tiny_cfg, "seg")
    cls = single_task_config(tiny_cfg, "cls")
    assert seg["model"]["heads"] == {"seg": tiny_cfg["model"]["heads"]["seg"]}
    assert seg["train"]["best_metric"] == "seg.mIoU" and cls["train"]["best_metric"] == "mean"
    assert cls["balancer"] == {"name": "fixed"}
    assert set(tiny_cfg["model"]["heads"]) == {"det", "seg", "edge", "cls"}  # not modified
    assert seg["data"] == tiny_cfg["data"] and seg["train"]["max_iters"] == 4
    with pytest.raises(ConfigError, match="no head for task 'depth'"):
        single_task_config(tiny_cfg, "depth")
    # Auxiliary tasks get no baseline; a baseline is the plain network without aux tasks.
    tiny_cfg["model"].update(sharing={"name": "mtan"}, aux_tasks=["edge"])
    assert baseline_tasks(tiny_cfg) == ["det", "seg", "cls"]
    seg = single_task_config(tiny_cfg, "seg")
    assert seg["model"]["sharing"] == {"name": "hard"} and seg["model"]["aux_tasks"] == []


def test_baselines_then_delta_m_with_the_tools(shapes_root, tmp_path, repo_root, overrides_for,
                                                capsys):
    from tools import eval as eval_tool
    from tools import train as train_tool

    work = tmp_path / "runs"
    over = [*overrides_for(shapes_root, iters=2), "model.heads.det=null",
            "model.heads.edge=null", "train.best_metric=seg.mIoU"]
    args = [str(repo_root / "configs" / "demo.yaml"), "--work-dir", str(work), "--no-progress",
            "--device", "cpu", *sum((["-o", o] for o in over), [])]
    assert train_tool.main([*args, "--single-task-baselines"]) == 0
    assert f"baselines: {work / 'baselines.json'}" in capsys.readouterr().out
    merged = json.loads((work / "baselines.json").read_text())
    assert list(merged) == ["seg", "cls"]
    for task in ("seg", "cls"):
        run = work / f"single_{task}"
        assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
        assert json.loads((run / "metrics.json").read_text()) == {task: merged[task]}
    assert 0.0 <= merged["seg"]["mIoU"] <= 1.0 and 0.0 <= merged["cls"]["top1"] <= 1.0
    assert "best_metric: mean" in (work / "single_cls" / "config.yaml").read_text()
    assert load_baselines(work / "baselines.json") == merged

    # --resume keeps what is finished: nothing is trained again.
    stamp = (work / "single_seg" / "best.pt").stat().st_mtime_ns
    assert train_tool.main([*args, "--single-task-baselines", "--resume"]) == 0
    assert (work / "single_seg" / "best.pt").stat().st_mtime_ns == stamp
    assert json.loads((work / "baselines.json").read_text()) == merged

    # The single-task seg model scored against the baselines: Delta_m 0 (same model and data);
    # only seg is compared (the model has no cls head).
    eval_args = [str(repo_root / "configs" / "demo.yaml"), str(work / "single_seg" / "best.pt"),
                 "--out", str(tmp_path / "m.json"), "--no-progress", "--device", "cpu",
                 "--baselines", str(work / "baselines.json"),
                 *sum((["-o", o] for o in over), [])]
    assert eval_tool.main(eval_args) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["delta_m"]["per_task"] == pytest.approx(0.0, abs=1e-9)
    assert res["delta_m"]["tasks"] == {"seg": pytest.approx(0.0, abs=1e-9)}
    assert "Delta_m over the single-task baselines" in printed
    # Excluding the only shared task leaves nothing: a one-line error.
    assert eval_tool.main([*eval_args, "--exclude", "seg"]) == 2
    assert "no metric to compare" in capsys.readouterr().err
    # A missing baselines file fails before the evaluation (the last --baselines counts).
    assert eval_tool.main([*eval_args, "--baselines", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_baselines_rejects_bad_files(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_baselines(bad)
    bad.write_text('{"seg": 0.5}')
    with pytest.raises(ConfigError, match="task -> "):
        load_baselines(bad)


def test_summary_score_follows_metric_direction():
    mixed = {"seg": {"mIoU": 0.6}, "depth": {"abs_err": 0.5, "delta1": 0.7},
             "normals": {"mean_angle": 20.0, "within_30": 0.8}}
    # Lower-is-better headlines stay out of the mean when a higher-is-better one exists.
    assert summary_score(mixed) == pytest.approx(0.6)
    # Only lower-is-better headlines: minus their mean.
    no_seg = {t: m for t, m in mixed.items() if t != "seg"}
    assert summary_score(no_seg) == pytest.approx(-(0.5 + 20.0) / 2)
    assert summary_score({"depth": {"abs_err": 0.5}}) == pytest.approx(-0.5)
    # A named metric is negated when lower is better, so higher is better for the trainer.
    assert summary_score(mixed, "depth.abs_err") == pytest.approx(-0.5)
    assert summary_score(mixed, "normals.within_30") == pytest.approx(0.8)
    assert summary_score(mixed, "depth.delta1") == pytest.approx(0.7)
    better = {**mixed, "depth": {"abs_err": 0.4, "delta1": 0.7}}
    assert summary_score(better, "depth.abs_err") > summary_score(mixed, "depth.abs_err")


def test_table_shows_delta_m():
    results = {"seg": {"mIoU": 0.55}, "depth": {"abs_err": 0.45}}
    dm = add_delta_m(results, {"seg": {"mIoU": 0.5}, "depth": {"abs_err": 0.5}})
    assert dm["tasks"] == pytest.approx({"seg": 10.0, "depth": 10.0})
    text = format_table(results)
    rows = [line.split() for line in text.splitlines()]
    assert ["seg", "mIoU", "0.5500"] in rows
    assert not any(r and r[0] == "delta_m" for r in rows)  # not a task row
    assert ["per", "task", "+10.00"] in rows and ["depth", "+10.00"] in rows
    with pytest.raises(ConfigError, match="no metric to compare"):
        add_delta_m({"cls": {"top1": 0.5}}, {"seg": {"mIoU": 0.5}})
