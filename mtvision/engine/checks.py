"""Checks made before training starts, each one clear error: the config against the data
(classes, tasks), against the model (the balancer's sharing needs, the best-checkpoint
metric), and the work dir."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mtvision.models import MultiTaskModel
from mtvision.registry import ConfigError


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says why."""


def check_heads_match(cfg: dict[str, Any], classes: dict[str, list[str]]) -> None:
    """A head's ``num_classes`` must equal the number of classes the dataset defines."""
    for task, head in cfg["model"]["heads"].items():
        names = classes.get(task)
        n = head.get("num_classes")
        if names and n is not None and n != len(names):
            raise ConfigError(f"model.heads.{task}.num_classes is {n} but the dataset at "
                              f"'{cfg['data']['root']}' has {len(names)} {task} classes {names}")


def check_tasks_overlap(cfg: dict[str, Any], train_set: Any) -> None:
    tasks = set(getattr(train_set, "tasks", cfg["model"]["heads"]))
    if not tasks & set(cfg["model"]["heads"]):
        raise ConfigError(f"the model's tasks {sorted(cfg['model']['heads'])} are none of the "
                          f"tasks the training data labels {sorted(tasks)}")


def check_best_metric(cfg: dict[str, Any]) -> None:
    key = cfg["train"]["best_metric"]
    if key == "mean":
        return
    task, _, metric = key.partition(".")
    if task not in cfg["model"]["heads"] or not metric:
        raise ConfigError(f"train.best_metric '{key}' must be 'mean' or 'task.metric' with a "
                          f"task of the model ({', '.join(cfg['model']['heads'])}), "
                          "e.g. 'seg.mIoU'")
    if task in (cfg["model"].get("aux_tasks") or ()):
        raise ConfigError(f"train.best_metric '{key}' names an auxiliary task "
                          f"(model.aux_tasks: {', '.join(cfg['model']['aux_tasks'])}); "
                          "pick a main task or 'mean'")


def check_sharing_balancer(cfg: dict[str, Any], model: MultiTaskModel, requires: str) -> None:
    """The balancer's mode must find what it differentiates: shared parameters (``param``)
    or shared features (``feature``) in the model's sharing architecture."""
    sharing, balancer = model.sharing.name, cfg["balancer"]["name"]
    if requires == "feature" and not model.sharing.shared_features:
        raise ConfigError(f"balancer.mode 'feature' ({balancer}) needs features shared by the "
                          f"tasks; model.sharing '{sharing}' has one backbone per task: use "
                          "balancer.mode=param, or model.sharing hard or mtan")
    if requires == "param" and not model.shared_parameters():
        alt = ", or balancer.mode=feature" if model.sharing.shared_features else ""
        raise ConfigError(f"balancer '{balancer}' (balancer.mode 'param') needs trainable "
                          f"parameters shared by the tasks and model.sharing '{sharing}' has "
                          f"none: use a loss-based balancer such as balancer.name=fixed{alt}")


def check_writable(folder: Path) -> None:
    """Fail at start, not at the first checkpoint, when ``folder`` cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test."):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write to the work dir {folder}: "
                            f"{e.strerror or e}") from None
