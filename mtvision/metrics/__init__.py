"""Evaluation metrics per task (det, seg, edge, cls, depth, normals, parts, sal) and the multi-task
Delta_m; they know nothing of the models."""

from __future__ import annotations

from collections.abc import Sequence

from mtvision.metrics.base import Metric
from mtvision.metrics.classification import ClassificationMetric, average_precision
from mtvision.metrics.depth import DepthMetric
from mtvision.metrics.detection import DetectionMetric, coco_evaluate, coco_results
from mtvision.metrics.edge import MATCHERS as EDGE_MATCHERS
from mtvision.metrics.edge import MODES as EDGE_MODES
from mtvision.metrics.edge import EdgeMetric, edge_benchmark, edge_ods_ois
from mtvision.metrics.multitask import (
    DELTA_M_METRICS,
    METRIC_DIRECTION,
    delta_m,
    lower_is_better,
    metric_direction,
)
from mtvision.metrics.normals import NormalsMetric, angle_errors
from mtvision.metrics.saliency import SaliencyMetric
from mtvision.metrics.segmentation import (
    SegmentationMetric,
    format_per_class_table,
    iou_from_confusion,
)
from mtvision.registry import ConfigError, closest

TASKS = ("det", "seg", "edge", "cls", "depth", "normals", "parts", "sal")

__all__ = [
    "DELTA_M_METRICS",
    "METRIC_DIRECTION",
    "TASKS",
    "ClassificationMetric",
    "DepthMetric",
    "DetectionMetric",
    "EdgeMetric",
    "Metric",
    "NormalsMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "angle_errors",
    "average_precision",
    "build_metric",
    "coco_evaluate",
    "coco_results",
    "delta_m",
    "edge_benchmark",
    "edge_ods_ois",
    "format_per_class_table",
    "iou_from_confusion",
    "lower_is_better",
    "metric_direction",
]


def build_metric(
    task: str,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    multi_label: bool = False,
    edge_thresholds: int = 99,
    edge_max_dist: float = 0.0075,
    edge_mode: str = "exact",
    edge_matcher: str = "optimal",
    edge_nms: bool = True,
    workers: int | None = None,
    cat_ids: Sequence[int] | None = None,
    sal_thresholds: int | Sequence[float] = 19,
    sal_beta2: float = 0.3,
) -> Metric:
    """The metric of ``task``, given the options it uses.

    det: ``num_classes``, ``class_names``, ``cat_ids`` (optional dataset category id of each
    contiguous label); seg: ``num_classes``, ``class_names`` (ignore 255);
    edge: ``edge_thresholds``, ``edge_max_dist`` (BSDS defaults), ``edge_mode`` ("exact": the
    BSDS pixel correspondence, "approx": faster distance matching, scores somewhat higher),
    ``edge_matcher`` ("optimal" or "csa"), ``edge_nms`` (edge NMS of soft maps first),
    ``workers`` (processes scoring images; None: the CPU count);
    cls: ``num_classes``, ``multi_label``; depth and normals: no option; parts (human parts):
    as seg, scored over the images that have the task's labels (images with people); sal:
    ``sal_thresholds`` (a count of evenly spaced thresholds, or the values) and ``sal_beta2``
    (``mtvision.metrics.saliency``).
    ``num_classes`` defaults to ``len(class_names)``.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'{closest(task, list(TASKS))}; "
                          f"available: {', '.join(TASKS)}")
    if task == "depth":
        return DepthMetric()
    if task == "normals":
        return NormalsMetric()
    if task == "sal":
        return SaliencyMetric(sal_thresholds, sal_beta2)
    if task == "edge":
        if edge_mode not in EDGE_MODES:
            raise ConfigError(f"unknown edge_mode '{edge_mode}'; available: "
                              f"{', '.join(EDGE_MODES)}")
        if edge_matcher not in EDGE_MATCHERS:
            raise ConfigError(f"unknown edge_matcher '{edge_matcher}'; available: "
                              f"{', '.join(EDGE_MATCHERS)}")
        return EdgeMetric(thresholds=edge_thresholds, max_dist=edge_max_dist, mode=edge_mode,
                          matcher=edge_matcher, nms=edge_nms, workers=workers)
    if num_classes is None:
        if class_names is None:
            raise ConfigError(f"metric for task '{task}' needs num_classes or class_names")
        num_classes = len(class_names)
    if task == "det":
        return DetectionMetric(num_classes, class_names=class_names, cat_ids=cat_ids)
    if task in ("seg", "parts"):
        return SegmentationMetric(num_classes, class_names=class_names)
    return ClassificationMetric(num_classes, multi_label=multi_label)
