"""The stateless functional form of the gradient-combining methods.

``aggregate(name, G, **options)`` turns the ``T x P`` matrix of task gradients (row i = the
gradient of task i's loss) into the combined update direction float32[P]. Gram-based methods
register a function of the Gram matrix ``G G^T`` returning task weights ``w`` (the direction is
then ``w^T G``); a per-coordinate method (GradDrop) registers a function of ``G`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mtvision.kernels import gram as gram_matrix
from mtvision.kernels import weighted_rows
from mtvision.registry import ConfigError, closest

# name -> (kind, fn): kind "gram" fn(gram [T, T], **options) -> w [T];
#                     kind "direct" fn(G [T, P], **options) -> direction [P]
AGGREGATORS: dict[str, tuple[str, Callable[..., Tensor]]] = {}


def register_aggregator(name: str, kind: str = "gram") -> Callable[[Callable[..., Tensor]],
                                                                  Callable[..., Tensor]]:
    """Register a method's pure function under ``name`` (``kind``: ``gram`` or ``direct``)."""
    if kind not in ("gram", "direct"):
        raise ValueError(f"kind must be 'gram' or 'direct', got {kind!r}")

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in AGGREGATORS:
            raise KeyError(f"aggregator '{name}' is registered twice")
        AGGREGATORS[name] = (kind, fn)
        return fn

    return deco


@register_aggregator("mean")
def mean_weights(gram: Tensor) -> Tensor:
    """``G.mean(0)``: every task weighs 1/T."""
    T = gram.shape[0]
    return torch.full((T,), 1.0 / T, device=gram.device, dtype=torch.float32)


@register_aggregator("sum")
def sum_weights(gram: Tensor) -> Tensor:
    """``G.sum(0)``: every task weighs 1."""
    return torch.ones(gram.shape[0], device=gram.device, dtype=torch.float32)


def aggregate(name: str, G: Tensor, **options: Any) -> Tensor:
    """The combined update float32[P] of method ``name`` for task gradients ``G`` [T, P]."""
    import mtvision.balancing  # noqa: F401 - registers every method's function

    if name not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator '{name}'{closest(name, list(AGGREGATORS))}; "
                          f"available: {', '.join(sorted(AGGREGATORS))}")
    if G.dim() != 2:
        raise ValueError(f"G must be [T, P], got shape {tuple(G.shape)}")
    if G.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        G = G.float()  # the kernels and the result are float32
    kind, fn = AGGREGATORS[name]
    if kind == "direct":
        return fn(G, **options)
    return weighted_rows(fn(gram_matrix(G), **options), G)
