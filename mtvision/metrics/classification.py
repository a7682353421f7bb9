"""Image classification: top-1 / top-5 accuracy (single label) or mAP (multi-label)."""

from __future__ import annotations

from typing import Any

import torch

from mtvision.metrics.base import Metric


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Average precision of one class: sum over distinct score thresholds of dR * P.

    Tied scores enter the ranking together (as scikit-learn's ``average_precision_score``),
    so the result does not depend on the order of ties. NaN when there is no positive.
    """
    scores = scores.double().reshape(-1)
    positives = positives.bool().reshape(-1)
    num_pos = int(positives.sum())
    if num_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    scores, hits = scores[order], positives[order].double()
    tp = torch.cumsum(hits, 0)
    ranks = torch.arange(1, len(hits) + 1, dtype=torch.float64)
    # Keep the last position of each run of equal scores: one operating point per threshold.
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    tp, ranks = tp[last], ranks[last]
    precision = tp / ranks
    recall_gain = torch.diff(tp, prepend=tp.new_zeros(1)) / num_pos
    return float((recall_gain * precision).sum())


class ClassificationMetric(Metric):
    """Accuracy of image-level labels.

    Single label: ``{"top1"}`` and, with more than 5 classes, ``{"top5"}``; targets ``long[B]``
    with -1 meaning unlabelled (such images are skipped). Multi-label: ``{"mAP", "top1"}``;
    targets multi-hot ``float[B, C]``; mAP averages the AP of the classes with at least one
    positive, top1 is the fraction of images whose highest-scoring class is a positive.
    Predictions are dicts with ``"probs"`` (float[C]).
    """

    def __init__(self, num_classes: int, multi_label: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.multi_label = multi_label

    def process(self, preds: list, targets: Any) -> None:
        probs = torch.stack([torch.as_tensor(p["probs"]).detach().float().cpu().reshape(-1)
                             for p in preds])
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"probs have {probs.shape[1]} classes, expected {self.num_classes}")
        target = torch.as_tensor(targets).detach().cpu()
        if self.multi_label:
            if target.shape != probs.shape:
                raise ValueError(f"multi-label target shape {tuple(target.shape)} != "
                                 f"probs {tuple(probs.shape)}")
            self.results.append((probs, target > 0.5))
            return
        target = target.long().reshape(-1)
        labelled = target >= 0
        if target.numel() and int(target.max()) >= self.num_classes:
            raise ValueError(f"class ids must lie in [0, {self.num_classes}) or be -1")
        probs, target = probs[labelled], target[labelled]
        # Store only per-image hits: memory stays small whatever the number of classes.
        k = min(5, self.num_classes)
        topk = probs.topk(k, dim=1).indices
        hit1 = topk[:, 0] == target
        hit5 = (topk == target[:, None]).any(dim=1)
        self.results.append((hit1, hit5))

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        if self.multi_label:
            if not results:
                return {"mAP": 0.0, "top1": 0.0}
            probs = torch.cat([r[0] for r in results])
            positives = torch.cat([r[1] for r in results])
            aps = [average_precision(probs[:, c], positives[:, c])
                   for c in range(self.num_classes) if positives[:, c].any()]
            best = probs.argmax(dim=1)
            top1 = positives[torch.arange(len(best)), best].double().mean()
            return {"mAP": float(sum(aps) / len(aps)) if aps else 0.0, "top1": float(top1)}
        hit1 = torch.cat([r[0] for r in results]) if results else torch.zeros(0, dtype=torch.bool)
        hit5 = torch.cat([r[1] for r in results]) if results else torch.zeros(0, dtype=torch.bool)
        n = len(hit1)
        out = {"top1": float(hit1.sum()) / n if n else 0.0}
        if self.num_classes > 5:
            out["top5"] = float(hit5.sum()) / n if n else 0.0
        return out
