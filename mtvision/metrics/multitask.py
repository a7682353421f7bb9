"""Metric directions and Delta_m, the average relative improvement of a multi-task model over
its single-task baselines (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR
2019; Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey",
TPAMI 2021, sec. 5):

    Delta_m = 1/T sum_t 1/N_t sum_i (-1)^{l_i} (M_i - B_i) / B_i * 100    ("per_task")

with M_i, B_i the multi-task and single-task values of metric i of task t and l_i = 1 when
lower is better. "per_task" averages within each task first (LibMTL's convention, Lin & Zhang,
"LibMTL", JMLR 2023); "per_metric" is the flat mean of the same terms over all metrics (the
convention of Nash-MTL, Navon et al., ICML 2022, and FAMO, Liu et al., NeurIPS 2023).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HIGHER, LOWER = "higher", "lower"

# Whether a higher or a lower value is better, once per (task, metric): Delta_m, the checkpoint
# summary score and anything else that compares results read it from here.
METRIC_DIRECTION: dict[str, dict[str, str]] = {
    "det": {k: HIGHER for k in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium",
                                "mAP_large", "mask_mAP", "mask_mAP50", "mask_mAP75")},
    "seg": {k: HIGHER for k in ("mIoU", "mAcc", "fwIoU", "pixel_acc")},
    "edge": {k: HIGHER for k in ("ODS", "OIS", "AP")},
    "cls": {k: HIGHER for k in ("top1", "top5", "mAP", "macro_f1", "roc_auc")},
    "depth": {"abs_err": LOWER, "rel_err": LOWER, "rmse": LOWER,
              "delta1": HIGHER, "delta2": HIGHER, "delta3": HIGHER},
    "normals": {"mean_angle": LOWER, "median_angle": LOWER,
                "within_11.25": HIGHER, "within_22.5": HIGHER, "within_30": HIGHER},
    "parts": {k: HIGHER for k in ("mIoU", "mAcc", "fwIoU", "pixel_acc")},
    "sal": {"maxF": HIGHER, "mIoU": HIGHER},
}

# The metrics Delta_m uses by default (those of them both results have): the usual sets of the
# multi-task literature, e.g. LibMTL's NYUv2 (mIoU, pixel acc; abs, rel err; the five normal
# measures) and Cityscapes.
DELTA_M_METRICS: dict[str, tuple[str, ...]] = {
    "det": ("mAP", "mAP50"),
    "seg": ("mIoU", "pixel_acc"),
    "edge": ("ODS", "OIS", "AP"),
    "cls": ("top1", "mAP"),
    "depth": ("abs_err", "rel_err"),
    "normals": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
    # PASCAL-Context's tasks as ASTMT, MTI-Net and InvPT compare them: one metric each.
    "parts": ("mIoU",),
    "sal": ("maxF",),
}


def metric_direction(task: str, metric: str) -> str | None:
    """``"higher"`` or ``"lower"`` (which is better) for ``task.metric``; None when undeclared."""
    return METRIC_DIRECTION.get(task, {}).get(metric)


def lower_is_better(task: str, metric: str) -> bool:
    return metric_direction(task, metric) == LOWER


def relative_improvement(value: float, baseline: float, lower_better: bool) -> float:
    """(-1)^l (M - B) / B * 100: percent gain of ``value`` over ``baseline``."""
    sign = -1.0 if lower_better else 1.0
    return sign * (value - baseline) / baseline * 100.0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _chosen(task: str, res: Mapping[str, Any], base: Mapping[str, Any],
            metrics: Mapping[str, Sequence[str]] | None) -> list[str]:
    if metrics is not None and task in metrics:
        names = list(metrics[task])
        for m in names:
            if metric_direction(task, m) is None:
                raise ValueError(f"Delta_m: no direction is declared for '{task}.{m}' "
                                 "(mtvision.metrics.multitask.METRIC_DIRECTION)")
            for what, d in (("results", res), ("baselines", base)):
                if not _is_number(d.get(m)):
                    raise ValueError(f"Delta_m: '{task}.{m}' is not among the {what}")
        return names
    default = DELTA_M_METRICS.get(task, tuple(METRIC_DIRECTION.get(task, {})))
    chosen = [m for m in default if metric_direction(task, m) is not None
              and _is_number(res.get(m)) and _is_number(base.get(m))]
    if not chosen:
        # Published baselines often give one other metric (NYUD-v2 depth: RMSE only): use
        # every declared metric both have rather than dropping the task.
        chosen = [m for m in METRIC_DIRECTION.get(task, {})
                  if _is_number(res.get(m)) and _is_number(base.get(m))]
    return chosen


def delta_m(results: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]],
            exclude: Iterable[str] = (), metrics: Mapping[str, Sequence[str]] | None = None
            ) -> dict[str, Any]:
    """Delta_m (percent) of ``results`` over ``baselines``, both ``{task: {metric: value}}``.

    Tasks: those in both, less ``exclude`` (e.g. auxiliary tasks). Metrics per task:
    ``metrics[task]`` when given (each must have a declared direction and be in both), else the
    task's ``DELTA_M_METRICS`` that both have (when both have none of them, every metric with a
    declared direction that both have). Returns ``{"per_task": float, "per_metric":
    float, "tasks": {task: mean term}, "metrics": {task: [names]}}``. Raises ValueError when
    nothing can be compared, or a baseline value is 0 or a value is not finite.
    """
    skip = set(exclude)
    tasks = [t for t in results if t in baselines and t not in skip]
    per_task: dict[str, float] = {}
    used: dict[str, list[str]] = {}
    terms: list[float] = []
    for task in tasks:
        names = _chosen(task, results[task], baselines[task], metrics)
        if not names:
            continue
        task_terms = []
        for m in names:
            value, base = float(results[task][m]), float(baselines[task][m])
            if not (math.isfinite(value) and math.isfinite(base)):
                raise ValueError(f"Delta_m: '{task}.{m}' is not finite (result {value}, "
                                 f"baseline {base})")
            if base == 0:
                raise ValueError(f"Delta_m: the baseline of '{task}.{m}' is 0")
            task_terms.append(relative_improvement(value, base, lower_is_better(task, m)))
        per_task[task] = sum(task_terms) / len(task_terms)
        used[task] = names
        terms += task_terms
    if not terms:
        raise ValueError(f"Delta_m: no metric to compare (result tasks {sorted(results)}, "
                         f"baseline tasks {sorted(baselines)}, excluded {sorted(skip)})")
    return {"per_task": sum(per_task.values()) / len(per_task),
            "per_metric": sum(terms) / len(terms), "tasks": per_task, "metrics": used}
