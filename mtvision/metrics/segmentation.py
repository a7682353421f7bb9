"""Semantic segmentation: dataset-level confusion matrix, IoU per class, mIoU, pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtvision.metrics.base import Metric, class_name_list


def iou_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, float, float]:
    """IoU per class, mIoU and pixel accuracy from a confusion matrix ``cm[target, pred]``.

    A class whose union (gt + predicted - both) is empty has IoU NaN and is left out of the
    mIoU; with no pixels at all mIoU and pixel accuracy are 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    ious = np.full(len(tp), np.nan)
    np.divide(tp, union, out=ious, where=union > 0)
    miou = float(ious[union > 0].mean()) if (union > 0).any() else 0.0
    total = cm.sum()
    pixel_acc = float(tp.sum() / total) if total > 0 else 0.0
    return ious, miou, pixel_acc


class SegmentationMetric(Metric):
    """mIoU and pixel accuracy over the dataset (not averaged per image).

    ``update`` takes per-image ``long[H, W]`` class maps and the batch target ``long[B, H, W]``;
    target pixels equal to ``ignore_index`` are skipped.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_name_list(class_names, num_classes)

    def process(self, preds: list, targets: Any) -> None:
        n = self.num_classes
        target = torch.as_tensor(targets)
        pred = torch.stack([torch.as_tensor(p) for p in preds]).to(target.device)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != {tuple(target.shape)}")
        valid = target != self.ignore_index
        t, p = target[valid].long(), pred[valid].long()
        if t.numel() and (t.min() < 0 or t.max() >= n):
            raise ValueError(f"target class ids must lie in [0, {n}) or be {self.ignore_index}")
        if p.numel() and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"predicted class ids must lie in [0, {n})")
        cm = torch.bincount(t * n + p, minlength=n * n).reshape(n, n).cpu()
        # One running matrix instead of one per sample keeps memory constant over the dataset.
        if self.results:
            self.results[0] += cm
        else:
            self.results.append(cm)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """``int64[C, C]``, rows = target class, columns = predicted class."""
        if not self.results:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.results[0].numpy().copy()

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        n = self.num_classes
        cm = results[0].numpy() if results else np.zeros((n, n), dtype=np.int64)
        ious, miou, acc = iou_from_confusion(cm)
        # Classes absent from both gt and predictions get NaN (no IoU defined), as in mmseg.
        per_class = {name: float(v) for name, v in zip(self.class_names, ious, strict=True)}
        return {"mIoU": miou, "pixel_acc": acc, "per_class_IoU": per_class}
