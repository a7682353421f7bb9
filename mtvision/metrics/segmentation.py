"""Semantic segmentation from a dataset-level confusion matrix: IoU and accuracy per class,
mIoU, mean class accuracy, frequency-weighted IoU and pixel accuracy."""

from __future__ import annotations

import math
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


def class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Accuracy (recall) per class, ``cm[c, c] / gt pixels of c``; NaN for classes absent
    from the ground truth."""
    cm = np.asarray(cm, dtype=np.float64)
    gt = cm.sum(axis=1)
    acc = np.full(len(gt), np.nan)
    np.divide(np.diag(cm), gt, out=acc, where=gt > 0)
    return acc


def frequency_weighted_iou(cm: np.ndarray) -> float:
    """FCN's frequency-weighted IoU: ``sum(freq * IoU)`` over classes with ground truth, where
    ``freq`` is the class's share of the (non-ignored) ground-truth pixels; 0 without pixels."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return 0.0
    freq = cm.sum(axis=1) / total
    ious = iou_from_confusion(cm)[0]
    present = freq > 0  # a class with gt pixels has a non-empty union, so its IoU is defined
    return float((freq[present] * ious[present]).sum())


def segmentation_scores(cm: np.ndarray, class_names: Sequence[str] | None = None
                        ) -> dict[str, Any]:
    """All scores of a confusion matrix ``cm[target, pred]`` (see :class:`SegmentationMetric`)."""
    cm = np.asarray(cm)
    names = class_name_list(class_names, len(cm))
    ious, miou, pixel_acc = iou_from_confusion(cm)
    accs = class_accuracy(cm)
    present = ~np.isnan(accs)
    return {
        "mIoU": miou,
        "mAcc": float(accs[present].mean()) if present.any() else 0.0,
        "fwIoU": frequency_weighted_iou(cm),
        "pixel_acc": pixel_acc,
        # NaN: no IoU (class absent from gt and predictions) / no accuracy (absent from gt).
        "per_class_IoU": {n: float(v) for n, v in zip(names, ious, strict=True)},
        "per_class_acc": {n: float(v) for n, v in zip(names, accs, strict=True)},
    }


def format_per_class_table(result: dict[str, Any], class_names: Sequence[str] | None = None,
                           digits: int = 2) -> str:
    """A plain-text table of IoU and accuracy per class (in %), then the means.

    ``result`` is what :class:`SegmentationMetric` computes; ``class_names`` picks and orders
    the rows (default: all classes of ``result``); undefined values print as "-".
    """
    ious, accs = result["per_class_IoU"], result.get("per_class_acc", {})
    names = list(ious) if class_names is None else list(class_names)
    missing = [n for n in names if n not in ious]
    if missing:
        raise KeyError(f"classes not in the result: {', '.join(missing)}")

    def pct(v: float | None) -> str:
        return "-" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"

    rows = [(n, pct(ious[n]), pct(accs.get(n))) for n in names]
    rows.append(("mean", pct(result["mIoU"]), pct(result.get("mAcc"))))
    header = ("class", "IoU", "acc")
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

    def line(r: tuple[str, str, str]) -> str:
        return f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}"

    rule = "-" * (sum(width) + 4)
    return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


class SegmentationMetric(Metric):
    """Scores over the dataset's confusion matrix (not averaged per image).

    ``update`` takes per-image ``long[H, W]`` class maps and the batch target ``long[B, H, W]``;
    target pixels equal to ``ignore_index`` are skipped. ``compute`` gives "mIoU", "mAcc"
    (mean class accuracy over classes with ground truth), "fwIoU", "pixel_acc" and the dicts
    "per_class_IoU", "per_class_acc" (see :func:`format_per_class_table`).
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

    def merge(self, results: list[Any], num_samples: int) -> None:
        """Add another share's confusion matrix to this one."""
        for cm in results:
            if self.results:
                self.results[0] += cm
            else:
                self.results.append(cm.clone())
        self.num_samples += num_samples

    @property
    def confusion_matrix(self) -> np.ndarray:
        """``int64[C, C]``, rows = target class, columns = predicted class."""
        if not self.results:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.results[0].numpy().copy()

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        n = self.num_classes
        cm = results[0].numpy() if results else np.zeros((n, n), dtype=np.int64)
        return segmentation_scores(cm, self.class_names)

    def table(self) -> str:
        """The per-class table of everything seen so far (:func:`format_per_class_table`)."""
        return format_per_class_table(self.compute(), self.class_names)
