"""Object detection: COCO box mAP@[.5:.95] and mAP50 computed with pycocotools."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mtvision.metrics.base import Metric, class_name_list, to_numpy


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64).copy()
    out[:, 2:] -= out[:, :2]
    return out


class DetectionMetric(Metric):
    """COCO-style box AP over the dataset (area range "all", at most 100 detections per image).

    ``update`` takes per-image ``{"boxes" xyxy, "scores", "labels"}`` predictions and per-image
    ``{"boxes", "labels"}`` targets (input pixels). ``compute`` gives ``{"mAP", "mAP50",
    "per_class": {name: AP@[.5:.95]}}``; a class without ground truth has per-class AP NaN and
    is left out of the means, and a dataset without any ground truth scores 0.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = class_name_list(class_names, num_classes)

    def process(self, preds: list, targets: Any) -> None:
        for pred, target in zip(preds, targets, strict=True):
            gt_boxes = to_numpy(target["boxes"]).reshape(-1, 4).astype(np.float64)
            gt_labels = to_numpy(target["labels"]).reshape(-1).astype(np.int64)
            if gt_labels.size and (gt_labels.min() < 0 or gt_labels.max() >= self.num_classes):
                raise ValueError(f"ground-truth labels must lie in [0, {self.num_classes})")
            self.results.append({
                "gt_boxes": gt_boxes,
                "gt_labels": gt_labels,
                "boxes": to_numpy(pred["boxes"]).reshape(-1, 4).astype(np.float64),
                "scores": to_numpy(pred["scores"]).reshape(-1).astype(np.float64),
                "labels": to_numpy(pred["labels"]).reshape(-1).astype(np.int64),
            })

    def _coco_gt(self, results: list[dict[str, np.ndarray]]) -> COCO:
        annotations = []
        for img_id, r in enumerate(results, start=1):
            for box, label in zip(_xyxy_to_xywh(r["gt_boxes"]), r["gt_labels"], strict=True):
                annotations.append({
                    # COCOeval treats annotation id 0 as "unmatched", so ids start at 1.
                    "id": len(annotations) + 1, "image_id": img_id,
                    "category_id": int(label) + 1, "bbox": box.tolist(),
                    "area": float(box[2] * box[3]), "iscrowd": 0,
                })
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(1, len(results) + 1)],
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(self.class_names)],
        }
        gt.createIndex()
        return gt

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        has_gt = np.zeros(self.num_classes, dtype=bool)
        for r in results:
            has_gt[r["gt_labels"]] = True
        per_class = {n: (0.0 if g else math.nan)
                     for n, g in zip(self.class_names, has_gt, strict=True)}
        dets = [
            {"image_id": img_id, "category_id": int(label) + 1, "bbox": box.tolist(),
             "score": float(score)}
            for img_id, r in enumerate(results, start=1)
            for box, score, label in zip(_xyxy_to_xywh(r["boxes"]), r["scores"], r["labels"],
                                         strict=True)
            if 0 <= label < self.num_classes
        ]
        # pycocotools cannot load an empty result list; no detections (or no ground truth) is
        # simply an AP of 0.
        if not dets or not has_gt.any():
            return {"mAP": 0.0, "mAP50": 0.0, "per_class": per_class}

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt = self._coco_gt(results)
            dt = gt.loadRes(dets)
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
        # precision[T iou, R recall, K class, A area, M maxDets]; -1 marks classes without gt.
        precision = ev.eval["precision"][:, :, :, 0, -1]

        def mean_valid(p: np.ndarray) -> float:
            valid = p[p > -1]
            return float(valid.mean()) if valid.size else 0.0

        for k, name in enumerate(self.class_names):
            if has_gt[k]:
                per_class[name] = mean_valid(precision[:, :, k])
        iou50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
        return {"mAP": mean_valid(precision), "mAP50": mean_valid(precision[iou50]),
                "per_class": per_class}
