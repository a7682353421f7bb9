"""Single-task baselines of a multi-task config, for Delta_m (``mtvision.metrics.multitask``).

``train_single_task_baselines`` trains one copy of the config per task head, with only that head
(``model.heads = {task: ...}``), the same backbone, data, optimisation and schedule, the plain
network (``model.sharing: hard``) and ``fixed`` loss weighting, each in
``WORK_DIR/single_<task>``; it evaluates each run's best checkpoint the way ``tools/eval.py``
evaluates the multi-task model (``evaluate_checkpoint``, ``data.val_split``) and writes the
merged results, ``{task: {metric: value}}``, to ``WORK_DIR/baselines.json``: the file
``tools/eval.py --baselines`` reads.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mtvision.data.io import write_json_atomic
from mtvision.engine.evaluator import evaluate_checkpoint
from mtvision.engine.trainer import train
from mtvision.registry import ConfigError

BASELINES_FILE = "baselines.json"


def single_task_config(cfg: dict[str, Any], task: str) -> dict[str, Any]:
    """A copy of the resolved ``cfg`` with only ``task``'s head, the plain (``hard``) sharing
    architecture, no auxiliary task, equal (fixed) loss weighting and a ``train.best_metric``
    that exists for it (the config's if it names this task, else ``"mean"``, i.e. the task's
    headline metric)."""
    heads = cfg["model"]["heads"]
    if task not in heads:
        raise ConfigError(f"single-task baseline: the config has no head for task '{task}' "
                          f"(heads: {', '.join(heads)})")
    out = copy.deepcopy(cfg)
    out["model"]["heads"] = {task: copy.deepcopy(heads[task])}
    if "aux_tasks" in out["model"]:
        out["model"]["aux_tasks"] = []
    if "sharing" in out["model"]:
        # A single-task baseline is the plain network (LibMTL's STL), whatever the multi-task
        # model's sharing architecture (MTAN's attention, soft sharing's copies...).
        out["model"]["sharing"] = {"name": "hard"}
    out["balancer"] = {"name": "fixed"}
    key = out["train"]["best_metric"]
    if key != "mean" and key.partition(".")[0] != task:
        out["train"]["best_metric"] = "mean"
    return out


def baseline_tasks(cfg: dict[str, Any]) -> list[str]:
    """The tasks that get a baseline: every head except auxiliary tasks (``model.aux_tasks``,
    which Delta_m leaves out)."""
    aux = set(cfg["model"].get("aux_tasks") or ())
    return [t for t in cfg["model"]["heads"] if t not in aux]


def train_single_task_baselines(cfg: dict[str, Any], work_dir: str | os.PathLike[str],
                                device: str = "auto", progress: bool = True,
                                tasks: Iterable[str] | None = None,
                                resume: bool = False) -> dict[str, dict[str, Any]]:
    """Train and evaluate one single-task model per task of ``cfg`` (default: every head but
    the auxiliary ones); return the merged ``{task: metrics}``, also written (atomically, after
    each task) to ``work_dir/baselines.json``.

    With ``resume``, a task whose folder already holds its evaluation (``metrics.json``) is
    read back, and one with a ``last.pt`` continues from it.
    """

    root = Path(work_dir)
    todo = list(tasks) if tasks is not None else baseline_tasks(cfg)
    if not todo:
        raise ConfigError("single-task baselines: no task to train")
    merged: dict[str, dict[str, Any]] = {}
    for task in todo:
        task_cfg = single_task_config(cfg, task)
        run_dir = root / f"single_{task}"
        done = run_dir / "metrics.json"
        if resume and done.is_file():
            results = json.loads(done.read_text(encoding="utf-8"))
        else:
            print(f"single-task baseline '{task}': {run_dir}")
            train(task_cfg, run_dir, resume and (run_dir / "last.pt").is_file(), device,
                  progress=progress)
            best = run_dir / "best.pt"
            ckpt = best if best.is_file() else run_dir / "last.pt"
            results = evaluate_checkpoint(task_cfg, str(ckpt), str(done), device,
                                          progress=progress)
        if task not in results:
            raise ConfigError(f"single-task baseline '{task}': the validation split "
                              f"'{cfg['data']['val_split']}' has no {task} labels to score")
        merged[task] = results[task]
        write_json_atomic(merged, root / BASELINES_FILE, indent=2)
    return merged
