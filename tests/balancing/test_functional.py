"""mtvision.balancing.aggregate: the functional form of the gradient-combining methods."""

from __future__ import annotations

import pytest
import torch

from mtvision.balancing import aggregate
from mtvision.balancing.functional import AGGREGATORS
from mtvision.registry import ConfigError

NAMES = ["mean", "sum", "mgda", "pcgrad", "cagrad", "imtl_g", "nash_mtl", "aligned_mtl",
         "upgrad", "graddrop"]


def test_every_issue_name_is_registered():
    import mtvision.balancing  # noqa: F401

    assert set(NAMES) <= set(AGGREGATORS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [2, 3, 7])
def test_mean_and_sum(T, dtype):
    G = torch.randn(T, 37, dtype=dtype)
    torch.testing.assert_close(aggregate("mean", G), G.float().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aggregate("sum", G), G.float().sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_results_do_not_depend_on_zero_padding(name):
    g = torch.Generator().manual_seed(3)
    G = torch.randn(3, 50, generator=g)
    padded = torch.cat([G, torch.zeros(3, 13)], dim=1)
    torch.manual_seed(0)
    a = aggregate(name, G)
    torch.manual_seed(0)
    b = aggregate(name, padded)
    assert a.shape == (50,) and b.shape == (63,)
    assert torch.isfinite(a).all()
    if name != "graddrop":  # its random numbers are drawn per coordinate
        torch.testing.assert_close(b[:50], a, rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(b[50:]) == 0


def test_graddrop_keeps_agreeing_signs():
    G = torch.tensor([[1.0, -2.0, 0.5], [3.0, -1.0, 0.25]])
    torch.testing.assert_close(aggregate("graddrop", G), G.sum(0))


def test_unknown_name():
    with pytest.raises(ConfigError, match="pcgrad"):
        aggregate("pcgard", torch.randn(2, 4))
    with pytest.raises(ValueError, match="T, P"):
        aggregate("mean", torch.randn(4))
