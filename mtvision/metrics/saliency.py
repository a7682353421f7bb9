"""Saliency (binary dense prediction) as the dense multi-task benchmarks score it on
PASCAL-Context: the prediction (a probability per pixel) is binarised at a set of thresholds,
and the best threshold is reported for two scores.

* ``maxF``: F-beta with beta^2 = 0.3 (the saliency literature's weighting of precision, Achanta
  et al., CVPR 2009) from the precision and recall of the whole dataset's pixels (true,
  predicted and actual positives summed over the images) at each threshold, maximised over the
  thresholds: the "maxF" of ATRC, InvPT and TaskPrompter.
* ``mIoU``: the IoU of the binarised prediction and the ground truth per image (1 when both are
  empty), averaged over the images, maximised over the thresholds: the mIoU of ASTMT and the
  Multi-Task-Learning-PyTorch code base.

Pixels labelled 255 are ignored. A pixel is predicted salient when its probability is strictly
above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtvision.metrics.base import Metric

IGNORE = 255


def default_thresholds(n: int = 19) -> np.ndarray:
    """``n`` evenly spaced thresholds ``k / (n + 1)``, k = 1..n (n = 19: 0.05, 0.10, ..., 0.95,
    the grid of InvPT's saliency evaluation)."""
    if n < 1:
        raise ValueError(f"the number of saliency thresholds must be >= 1, got {n}")
    return np.arange(1, n + 1, dtype=np.float64) / (n + 1)


def f_beta(precision: np.ndarray, recall: np.ndarray, beta2: float) -> np.ndarray:
    """``(1 + b2) P R / (b2 P + R)`` elementwise; 0 where P and R are both 0."""
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    den = beta2 * p + r
    out = np.zeros(np.broadcast(p, r).shape)
    np.divide((1.0 + beta2) * p * r, den, out=out, where=den > 0)
    return out


class SaliencyMetric(Metric):
    """maxF and mIoU over thresholds (module docstring).

    ``update`` takes per-image float[H, W] probabilities and the batch target long[B, H, W]
    (1 salient, 0 not, 255 ignored). ``thresholds``: a number n of evenly spaced thresholds
    (``default_thresholds``) or the values themselves, in (0, 1). ``compute`` gives ``maxF``,
    ``mIoU`` (fractions) and ``maxF_threshold``, the threshold that gives maxF.
    """

    def __init__(self, thresholds: int | Sequence[float] = 19, beta2: float = 0.3) -> None:
        super().__init__()
        if isinstance(thresholds, (int, np.integer)):
            values = default_thresholds(int(thresholds))
        else:
            values = np.asarray(list(thresholds), dtype=np.float64)
            if values.ndim != 1 or values.size == 0:
                raise ValueError("saliency thresholds must be a non-empty list of numbers")
        if not ((values > 0) & (values < 1)).all():
            raise ValueError(f"saliency thresholds must lie in (0, 1), got {values.tolist()}")
        if beta2 <= 0:
            raise ValueError(f"beta2 must be > 0, got {beta2}")
        self.thresholds = np.sort(values)
        self.beta2 = float(beta2)

    def process(self, preds: list, targets: Any) -> None:
        target = torch.as_tensor(targets).detach().cpu()
        thr = torch.as_tensor(self.thresholds, dtype=torch.float64)
        counts = torch.zeros(len(thr), 3, dtype=torch.float64)  # TP, predicted, actual positives
        ious = []
        for pred, t in zip(preds, target, strict=True):
            p = torch.as_tensor(pred).detach().cpu().double()
            if p.shape != t.shape:
                raise ValueError(f"saliency prediction shape {tuple(p.shape)} != target "
                                 f"{tuple(t.shape)}")
            valid = t != IGNORE
            gt = t[valid] == 1
            above = p[valid][:, None] > thr[None, :]  # [pixels, thresholds]
            tp = (above & gt[:, None]).sum(0).double()
            pp = above.sum(0).double()
            ap = gt.sum().double().expand_as(tp)
            counts += torch.stack([tp, pp, ap], 1)
            union = pp + ap - tp
            ious.append(torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp)))
        self.results.append((counts.numpy(), torch.stack(ious).numpy()))

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        if not results:
            return {"maxF": 0.0, "mIoU": 0.0, "maxF_threshold": float(self.thresholds[0])}
        counts = sum(c for c, _ in results)
        tp, pp, ap = counts[:, 0], counts[:, 1], counts[:, 2]
        precision = np.divide(tp, pp, out=np.zeros_like(tp), where=pp > 0)
        recall = np.divide(tp, ap, out=np.zeros_like(tp), where=ap > 0)
        f = f_beta(precision, recall, self.beta2)
        best = int(np.argmax(f))
        miou = np.concatenate([i for _, i in results]).mean(0)
        return {"maxF": float(f[best]), "mIoU": float(miou.max()),
                "maxF_threshold": float(self.thresholds[best])}
