"""Per-task gradients written straight into the rows of one preallocated ``T x P`` buffer.

Autograd accumulates a leaf's gradient in place into ``.grad`` when one is bound. Binding each
shared parameter's (or cut feature's) ``.grad`` to its slice of row i before task i's backward
makes autograd write task i's gradient into row i: no per-step allocation, no copy, no host
round trip. The combined update is written the same way into one flat buffer whose slices are
the shared parameters' final ``.grad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class FeatureCut(NamedTuple):
    """The shared features of one step, cut between backbone and heads (mode ``feature``).

    ``source``: the backbone/neck outputs the heads consume (in the graph of the shared
    parameters); ``leaves``: detached copies with ``requires_grad`` that the heads run on, so a
    task's backward stops at them and their ``.grad`` is that task's feature gradient.
    """

    source: list[Tensor]
    leaves: list[Tensor]

    @classmethod
    def of(cls, features: dict[str, Tensor], names: Sequence[str]) -> tuple[FeatureCut,
                                                                           dict[str, Tensor]]:
        """The cut of ``features[names]`` and the feature dict the heads should use."""
        source = [features[n] for n in names]
        leaves = [f.detach().requires_grad_() for f in source]
        return cls(source, leaves), {**features, **dict(zip(names, leaves, strict=True))}


def _bind(tensors: Sequence[Tensor], flat: Tensor) -> None:
    """Make each tensor's ``.grad`` the matching slice of ``flat``."""
    off = 0
    for t in tensors:
        n = t.numel()
        t.grad = flat[off:off + n].view_as(t)
        off += n


class TaskGradients:
    """The ``T x P`` buffer of task gradients and the flat buffer of the combined update.

    Both are allocated on first use and again only when the number of tasks, the size or the
    dtype/device of the tensors differs from the last step's (feature maps change size with the
    input; a batch may label fewer tasks, which uses the first rows).
    """

    def __init__(self) -> None:
        self.rows: Tensor | None = None
        self.flat: Tensor | None = None

    @staticmethod
    def _numel(tensors: Sequence[Tensor]) -> int:
        return sum(t.numel() for t in tensors)

    def _rows(self, T: int, like: Tensor, P: int, zero: bool = True) -> Tensor:
        if (self.rows is None or self.rows.shape[0] < T or self.rows.shape[1] != P
                or self.rows.dtype != like.dtype or self.rows.device != like.device):
            if not zero:
                raise ValueError("cannot add to task gradients of another shape or task count")
            self.rows = torch.empty((T, P), dtype=like.dtype, device=like.device)
        G = self.rows[:T]
        if zero:
            G.zero_()
        return G

    def out(self, tensors: Sequence[Tensor], bind: bool) -> Tensor:
        """The flat buffer [P] for the combined update (bound as ``.grad`` when ``bind``)."""
        P = self._numel(tensors)
        like = tensors[0]
        if (self.flat is None or self.flat.numel() != P or self.flat.dtype != like.dtype
                or self.flat.device != like.device):
            self.flat = torch.empty(P, dtype=like.dtype, device=like.device)
        if bind:
            _bind(tensors, self.flat)
        return self.flat

    def collect(self, losses: Sequence[Tensor], tensors: Sequence[Tensor],
                zero: bool = True) -> Tensor:
        """Row i = d losses[i] / d tensors (flattened in order): [T, P], a view of the buffer.

        ``tensors`` are leaves (shared parameters, or a ``FeatureCut``'s leaves). Every other
        leaf in a task's graph (its head's parameters) accumulates its ``.grad`` as usual.
        ``zero=False`` adds to the rows of the last call (gradient accumulation).
        """
        G = self._rows(len(losses), tensors[0], self._numel(tensors), zero)
        last = len(losses) - 1
        for i, loss in enumerate(losses):
            _bind(tensors, G[i])
            loss.backward(retain_graph=i < last)
        for t in tensors:
            t.grad = None  # the rows stay; the tensors get their final .grad later
        return G


def pairwise_cosines(gram: Tensor, tasks: Sequence[str]) -> dict[str, Tensor]:
    """``{"cos/a|b": cos(g_a, g_b)}`` for every pair of tasks, from the Gram matrix (free: no
    pass over the gradients). 0 where a gradient is 0."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-30), torch.zeros_like(gram))
    return {f"cos/{a}|{b}": cos[i, j] for i, a in enumerate(tasks)
            for j, b in enumerate(tasks) if i < j}
