"""Monocular depth: the error and accuracy measures of Eigen et al., "Depth Map Prediction from
a Single Image using a Multi-Scale Deep Network", NIPS 2014, sec. 4.

Every value is a mean over all valid pixels (target depth > 0) of the dataset, not a mean of
per-image means: LibMTL / MTAN's NYUv2 convention (their batch means are weighted by the number
of valid pixels, which pools the pixels).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mtvision.metrics.base import Metric

# Sums kept per batch: valid pixels, sum |e|, sum |e| / d*, sum e^2, then pixels within
# delta < 1.25, 1.25^2, 1.25^3.
_FIELDS = ("n", "abs", "rel", "sq", "d1", "d2", "d3")


class DepthMetric(Metric):
    """Depth errors over the valid pixels (target > 0 and finite) of the dataset.

    ``update`` takes per-image float[H, W] depth maps and the batch target float[B, H, W] (0 =
    invalid). ``compute`` gives, with d the prediction and d* the target:
    "abs_err" mean |d - d*|, "rel_err" mean |d - d*| / d*, "rmse" sqrt(mean (d - d*)^2) and
    "delta1" .. "delta3" the fraction of pixels with max(d / d*, d* / d) < 1.25^k (a
    prediction <= 0 is outside every threshold). All 0 without valid pixels.
    """

    def process(self, preds: list, targets: Any) -> None:
        target = torch.as_tensor(targets).detach().cpu().double()
        maps = [torch.as_tensor(p).detach().cpu().double() for p in preds]
        # float[H, W] per image; a float[1, H, W] map is accepted too.
        pred = torch.stack([m[0] if m.dim() == 3 and m.shape[0] == 1 else m for m in maps])
        if pred.shape != target.shape:
            raise ValueError(f"depth prediction shape {tuple(pred.shape)} != target "
                             f"{tuple(target.shape)}")
        valid = (target > 0) & torch.isfinite(target)
        d, t = pred[valid], target[valid]
        err = d - t
        positive = d > 0
        ratio = torch.where(positive, torch.maximum(d / t, t / d.where(positive, 1.0)),
                            torch.full_like(d, math.inf))
        sums = torch.stack([
            valid.sum().double(), err.abs().sum(), (err.abs() / t).sum(), err.pow(2).sum(),
            *[(ratio < 1.25 ** k).sum().double() for k in (1, 2, 3)],
        ])
        self.results.append(sums)

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        s = dict(zip(_FIELDS, (torch.stack(results).sum(0) if results
                               else torch.zeros(len(_FIELDS), dtype=torch.float64)).tolist(),
                     strict=True))
        n = s["n"]
        if n == 0:
            return {"abs_err": 0.0, "rel_err": 0.0, "rmse": 0.0,
                    "delta1": 0.0, "delta2": 0.0, "delta3": 0.0}
        return {"abs_err": s["abs"] / n, "rel_err": s["rel"] / n, "rmse": math.sqrt(s["sq"] / n),
                "delta1": s["d1"] / n, "delta2": s["d2"] / n, "delta3": s["d3"] / n}
