"""Image classification: top-1 / top-5 accuracy and macro F1 (single label); mAP, top-1,
macro F1 and macro ROC-AUC (multi-label). F1 and ROC-AUC come from scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    """Scores of image-level labels; predictions are dicts with ``"probs"`` (float[C]).

    Single label (targets ``long[B]``, -1 = unlabelled, such images are skipped):
      "top1"      fraction of images whose highest-scoring class is the target;
      "top5"      (``f"top{top_k}"``) fraction whose target is among the ``top_k`` (5)
                  highest-scoring classes; only with more than ``top_k`` classes: with
                  k >= C top-k is 1 by construction, so it is left out rather than reported;
      "macro_f1"  F1 of the arg-max predictions per class, averaged over the classes present in
                  the targets or the predictions (``sklearn.metrics.f1_score``, average="macro";
                  a class with no true positive scores 0).
    Multi-label (targets multi-hot ``float[B, C]``):
      "mAP"       mean over classes with at least one positive of their average precision;
      "top1"      fraction of images whose highest-scoring class is a positive;
      "macro_f1"  F1 of the decisions ``prob >= threshold`` per class, averaged over the classes
                  positive in the targets or the predictions (0 when there is none);
      "roc_auc"   ROC-AUC per class averaged over the classes with both positive and negative
                  images (``sklearn.metrics.roc_auc_score``, average="macro"); NaN when no class
                  has both.
    Everything is 0 before any image is seen (roc_auc NaN).
    """

    def __init__(self, num_classes: int, multi_label: bool = False, top_k: int = 5,
                 threshold: float = 0.5) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.top_k = top_k
        self.threshold = threshold

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
        # Store only per-image hits and labels: memory stays small whatever the number of
        # classes.
        topk = probs.topk(min(self.top_k, self.num_classes), dim=1).indices
        hitk = (topk == target[:, None]).any(dim=1)
        self.results.append((topk[:, 0], target, hitk))

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        from sklearn.metrics import f1_score  # imported when scoring: sklearn loads slowly

        if self.multi_label:
            return self._multi_label(results)
        pred = torch.cat([r[0] for r in results]) if results else torch.zeros(0, dtype=torch.long)
        target = torch.cat([r[1] for r in results]) if results else pred
        hitk = torch.cat([r[2] for r in results]) if results else pred.bool()
        n = len(pred)
        out = {"top1": float((pred == target).sum()) / n if n else 0.0}
        if self.num_classes > self.top_k:
            out[f"top{self.top_k}"] = float(hitk.sum()) / n if n else 0.0
        out["macro_f1"] = (float(f1_score(target.numpy(), pred.numpy(), average="macro",
                                          zero_division=0)) if n else 0.0)
        return out

    def _multi_label(self, results: list[Any]) -> dict[str, Any]:
        from sklearn.metrics import f1_score, roc_auc_score

        if not results:
            return {"mAP": 0.0, "top1": 0.0, "macro_f1": 0.0, "roc_auc": float("nan")}
        probs = torch.cat([r[0] for r in results])
        positives = torch.cat([r[1] for r in results])
        aps = [average_precision(probs[:, c], positives[:, c])
               for c in range(self.num_classes) if positives[:, c].any()]
        best = probs.argmax(dim=1)
        top1 = positives[torch.arange(len(best)), best].double().mean()
        y_true = positives.numpy().astype(np.int64)
        y_score = probs.double().numpy()
        y_pred = (y_score >= self.threshold).astype(np.int64)
        # Macro averages as per-class binary scores (sklearn's "macro" over the chosen columns,
        # also right for a single class, which sklearn would read as a binary problem).
        seen = [c for c in range(self.num_classes) if y_true[:, c].any() or y_pred[:, c].any()]
        f1 = (float(np.mean([f1_score(y_true[:, c], y_pred[:, c], zero_division=0)
                             for c in seen])) if seen else 0.0)
        both = [c for c in range(self.num_classes)
                if y_true[:, c].any() and not y_true[:, c].all()]
        auc = (float(np.mean([roc_auc_score(y_true[:, c], y_score[:, c]) for c in both]))
               if both else float("nan"))
        return {"mAP": float(sum(aps) / len(aps)) if aps else 0.0, "top1": float(top1),
                "macro_f1": f1, "roc_auc": auc}
