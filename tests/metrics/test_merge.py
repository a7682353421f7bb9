"""Metric.merge (distributed evaluation): scoring two shares merged equals scoring the whole."""

import math

import numpy as np
import pytest
import torch

from mtvision.metrics.classification import ClassificationMetric
from mtvision.metrics.depth import DepthMetric
from mtvision.metrics.detection import DetectionMetric
from mtvision.metrics.edge import EdgeMetric
from mtvision.metrics.normals import NormalsMetric
from mtvision.metrics.segmentation import SegmentationMetric


def _seg(g):
    return ([torch.randint(0, 4, (8, 8), generator=g) for _ in range(2)],
            torch.randint(0, 4, (2, 8, 8), generator=g))


def _cls(g):
    return ([{"label": 0, "probs": torch.softmax(torch.randn(3, generator=g), 0)}
             for _ in range(2)], torch.randint(0, 3, (2,), generator=g))


def _depth(g):
    return ([torch.rand(6, 6, generator=g) + 0.5 for _ in range(2)],
            torch.rand(2, 6, 6, generator=g) + 0.5)


def _normals(g):
    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-3)
    return [unit(3, 5, 5) for _ in range(2)], unit(2, 3, 5, 5)


def _edge(g):
    target = (torch.rand(2, 16, 16, generator=g) > 0.8).to(torch.uint8)
    return [torch.rand(16, 16, generator=g) for _ in range(2)], target


def _det(g):
    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 50
        return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], 1)
    preds = [{"boxes": boxes(4), "scores": torch.rand(4, generator=g),
              "labels": torch.randint(0, 2, (4,), generator=g)} for _ in range(2)]
    targets = [{"boxes": boxes(2), "labels": torch.randint(0, 2, (2,), generator=g)}
               for _ in range(2)]
    return preds, targets


CASES = {
    "seg": (lambda: SegmentationMetric(4), _seg),
    "cls": (lambda: ClassificationMetric(3, top_k=2), _cls),
    "depth": (lambda: DepthMetric(), _depth),
    "normals": (lambda: NormalsMetric(), _normals),
    "edge": (lambda: EdgeMetric(thresholds=9, mode="approx"), _edge),
    "det": (lambda: DetectionMetric(2), _det),
}


def _close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, (int, float, np.floating, np.integer)):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    elif isinstance(a, (list, tuple, np.ndarray)):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-9)
    else:
        assert a == b


@pytest.mark.parametrize("task", list(CASES))
def test_merging_shares_equals_one_pass(task):
    make, batch = CASES[task]
    g = torch.Generator().manual_seed(0)
    batches = [batch(g) for _ in range(4)]
    whole, first, second = make(), make(), make()
    for i, (preds, target) in enumerate(batches):
        whole.update(preds, target)
        # Rank-style shares: every other batch, as the evaluation shards are strided.
        (first if i % 2 == 0 else second).update(preds, target)
    first.merge(second.results, second.num_samples)
    assert first.num_samples == whole.num_samples == 8
    _close(whole.compute(), first.compute())
