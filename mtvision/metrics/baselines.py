"""Baseline numbers for Delta_m (``mtvision.metrics.multitask``): single-task results JSON
(``mtvision.engine.baselines.train_single_task_baselines`` writes one) or a YAML of published
numbers. Read here, beside the metrics, so that evaluation needs nothing of training."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtvision.registry import ConfigError


def load_baselines(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a baselines JSON (``{task: {metric: value}}``, as written by
    ``train_single_task_baselines`` or merged from single-task results files), or a YAML of
    published numbers (``.yaml`` / ``.yml``, ``load_published_baselines``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"baselines file {p} does not exist")
    if p.suffix.lower() in (".yaml", ".yml"):
        return load_published_baselines(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"baselines file {p} is not valid JSON ({e.msg}, line {e.lineno})"
                          ) from None
    if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
        raise ConfigError(f"baselines file {p} must map task -> {{metric: value}}")
    return {str(t): dict(m) for t, m in data.items()}


# Free-text keys a published-baselines YAML may carry beside ``results``.
PUBLISHED_INFO_KEYS = ("paper", "table", "model", "backbone", "notes")


def _published_value(value: Any, where: str) -> float:
    """A published number in the results' units: ``"79.03%"`` is 0.7903 (the papers give
    fractions in percent), a plain number is taken as it is (degrees, metres...)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{where}: expected a number or a percentage like '79.03%', got {value!r}")


def load_published_baselines(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Published numbers to compute Delta_m against, from a YAML file::

        paper: "Ye & Xu, InvPT, ECCV 2022"     # optional free text: paper, table, model,
        table: "Table 5"                       # backbone, notes
        results:
          seg: {mIoU: 79.03%}                  # "N%" = N / 100: fractions as mtvision reports
          normals: {mean_angle: 14.15}         # plain numbers as they are (degrees, metres)

    (a mapping ``{task: {metric: value}}`` without the other keys is read the same). Every
    task and metric must be one mtvision reports with a declared direction
    (``mtvision.metrics.multitask.METRIC_DIRECTION``), so a misspelt name fails here rather
    than silently dropping out of Delta_m.
    """
    import yaml

    from mtvision.metrics.multitask import METRIC_DIRECTION

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"baselines file {p}: cannot read it ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"baselines file {p} is not valid YAML ({e})") from None
    if isinstance(data, Mapping) and "results" in data:
        extra = [k for k in data if k != "results" and k not in PUBLISHED_INFO_KEYS]
        if extra:
            raise ConfigError(f"baselines file {p}: unknown key {extra[0]!r} (valid: results, "
                              f"{', '.join(PUBLISHED_INFO_KEYS)})")
        data = data["results"]
    if not isinstance(data, Mapping) or not data \
            or not all(isinstance(v, Mapping) for v in data.values()):
        raise ConfigError(f"baselines file {p} must map task -> {{metric: value}} (under "
                          "'results')")
    out: dict[str, dict[str, float]] = {}
    for task, metrics in data.items():
        if task not in METRIC_DIRECTION:
            raise ConfigError(f"baselines file {p}: unknown task {task!r} (tasks: "
                              f"{', '.join(METRIC_DIRECTION)})")
        for metric, value in metrics.items():
            if metric not in METRIC_DIRECTION[task]:
                raise ConfigError(f"baselines file {p}: unknown metric '{task}.{metric}' "
                                  f"(valid: {', '.join(METRIC_DIRECTION[task])})")
            out.setdefault(str(task), {})[str(metric)] = _published_value(
                value, f"baselines file {p}: '{task}.{metric}'")
    return out
