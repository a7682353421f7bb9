"""Surface normals: angular error statistics over the valid pixels of the dataset, the protocol of
Eigen & Fergus ("Predicting Depth, Surface Normals and Semantic Labels with a Common
Multi-Scale Convolutional Architecture", ICCV 2015, table 3) as MTAN / LibMTL compute it on
NYUv2: the angle between the predicted and ground-truth normals in degrees, pooled over all
valid pixels; mean, median, and the fractions below 11.25, 22.5 and 30 degrees.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mtvision.metrics.base import Metric

THRESHOLDS = (11.25, 22.5, 30.0)


def angle_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angles in degrees between ``pred`` and ``target`` [..., 3, H, W] at the valid pixels
    (target a finite non-zero vector), as a flat float64 tensor. Both are normalised first; a
    zero prediction is 90 degrees from everything."""
    pred, target = pred.double(), target.double()
    valid = (target != 0).any(-3) & torch.isfinite(target).all(-3)
    p = pred.movedim(-3, -1)[valid]
    t = target.movedim(-3, -1)[valid]
    p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    t = t / t.norm(dim=-1, keepdim=True)
    return torch.rad2deg(torch.acos((p * t).sum(-1).clamp(-1.0, 1.0)))


class NormalsMetric(Metric):
    """Angle errors (degrees) over the valid pixels of the dataset.

    ``update`` takes per-image float[3, H, W] normals and the batch target float[B, 3, H, W]
    (the zero vector = invalid). ``compute`` gives "mean_angle", "median_angle" and
    "within_11.25", "within_22.5", "within_30" (fractions of pixels with an error strictly
    below the threshold); all 0 without valid pixels.

    The median comes from a histogram of ``bin_size``-degree bins (the midpoint of the bins
    holding the middle rank(s); error <= bin_size / 2, default 0.0005 degrees), so memory stays
    constant over the dataset; the mean and the fractions are exact.
    """

    def __init__(self, bin_size: float = 1e-3) -> None:
        super().__init__()
        if bin_size <= 0:
            raise ValueError(f"bin_size must be > 0, got {bin_size}")
        self.bin_size = float(bin_size)
        self.num_bins = math.ceil(180.0 / self.bin_size)

    def process(self, preds: list, targets: Any) -> None:
        target = torch.as_tensor(targets).detach().cpu()
        pred = torch.stack([torch.as_tensor(p).detach().cpu() for p in preds])
        if pred.shape != target.shape:
            raise ValueError(f"normals prediction shape {tuple(pred.shape)} != target "
                             f"{tuple(target.shape)}")
        err = angle_errors(pred, target)
        bins = (err / self.bin_size).long().clamp_(0, self.num_bins - 1)
        hist = torch.bincount(bins, minlength=self.num_bins)
        sums = torch.tensor([float(err.numel()), float(err.sum()),
                             *[float((err < t).sum()) for t in THRESHOLDS]], dtype=torch.float64)
        # One running histogram (like the segmentation confusion matrix) and per-batch sums.
        if self.results:
            self.results[0][0] += hist
            self.results[0][1] += sums
        else:
            self.results.append([hist, sums])

    def merge(self, results: list[Any], num_samples: int) -> None:
        """Add another share's histogram and sums to this one's."""
        for hist, sums in results:
            if self.results:
                self.results[0][0] += hist
                self.results[0][1] += sums
            else:
                self.results.append([hist.clone(), sums.clone()])
        self.num_samples += num_samples

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        keys = ("mean_angle", "median_angle", *[f"within_{t:g}" for t in THRESHOLDS])
        if not results or results[0][1][0] == 0:
            return dict.fromkeys(keys, 0.0)
        hist, sums = results[0]
        n = int(sums[0])
        cum = torch.cumsum(hist, 0)
        # numpy's median: the mean of the values at ranks (n - 1) // 2 and n // 2 (0-based).
        ranks = torch.tensor([(n - 1) // 2, n // 2])
        mid = (torch.searchsorted(cum, ranks, right=True).double() + 0.5) * self.bin_size
        values = [float(sums[1]) / n, float(mid.mean()),
                  *[float(c) / n for c in sums[2:]]]
        return dict(zip(keys, values, strict=True))
