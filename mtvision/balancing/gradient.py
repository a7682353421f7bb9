"""Gradient-based balancing: methods that combine the task gradients, not only the losses.

The engine (``TaskGradients``) writes each task's gradient with respect to the shared
parameters (mode ``param``) or the shared features (mode ``feature``, MGDA-UB style) into a row
of one preallocated ``T x P`` buffer; a method turns that matrix (usually only its Gram matrix
``G G^T``) into task weights ``w`` and the update ``w^T G`` is written straight into the shared
parameters' flat gradient buffer (``param``) or back-propagated once through the backbone
(``feature``). A method implements ``task_weights`` (Gram-based) or ``direction`` (any
per-coordinate rule, e.g. GradDrop).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from mtvision.balancing.base import Balancer
from mtvision.balancing.task_gradients import FeatureCut, TaskGradients
from mtvision.collectives import (
    all_reduce_mean_,
    all_reduce_sum_,
    is_distributed,
    world_size,
)
from mtvision.kernels import gram as gram_matrix
from mtvision.kernels import weighted_rows
from mtvision.registry import ConfigError

MODES = ("param", "feature")


class GradientBalancer(Balancer):
    """Base class of the methods that look at the task gradients.

    ``mode``: ``"param"`` (exact gradients of the shared parameters, one backward per task)
    or ``"feature"`` (gradients of the shared features: one backward per task through the heads
    only, then one backward through the backbone). Subclasses implement ``task_weights`` (from
    the Gram matrix and the losses) or override ``direction``.
    """

    needs_gram: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[str], mode: str = "param") -> None:
        super().__init__(tasks)
        if mode not in MODES:
            raise ConfigError(f"balancer.mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.requires = mode
        # The last step's Gram matrix (unscaled) and task weights, for interference logging.
        self.stats: dict[str, Tensor] = {}
        self.grads = TaskGradients()
        # Which of self.tasks the rows of this step's G belong to (a batch may label fewer).
        self._step_rows: list[int] | None = None
        self._k = 1  # micro-batches accumulated into this step

    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """Task-specific parameters see each task's own loss unweighted."""
        return {t: torch.ones((), device=v.device) for t, v in losses.items()}

    def task_rows(self, T: int) -> list[int] | None:
        """The indices into ``self.tasks`` of this step's T Gram rows, or None when they are
        all of ``self.tasks`` in order. Methods that keep one buffer entry per task use it with
        ``gather`` / ``scatter``; Python ints only, so no index tensor goes to the device."""
        rows = self._step_rows
        if rows is None:
            if T != len(self.tasks):
                raise ValueError(f"a Gram matrix of {T} tasks for a balancer of "
                                 f"{len(self.tasks)}: call backward, which knows which tasks")
            return None
        return None if rows == list(range(len(self.tasks))) else rows

    @staticmethod
    def gather(buf: Tensor, rows: list[int] | None, square: bool = False) -> Tensor:
        """``buf[rows]`` (``buf[rows][:, rows]`` when ``square``)."""
        if rows is None:
            return buf
        out = torch.stack([buf[i] for i in rows])
        return torch.stack([out[:, j] for j in rows], dim=1) if square else out

    @staticmethod
    def scatter(buf: Tensor, rows: list[int] | None, values: Tensor,
                square: bool = False) -> None:
        """``buf[rows] = values`` (``buf[rows][:, rows]`` when ``square``), in place."""
        values = values.to(buf.dtype)
        if rows is None:
            buf.copy_(values)
            return
        for a, i in enumerate(rows):
            if square:
                for b, j in enumerate(rows):
                    buf[i, j].copy_(values[a, b])
            else:
                buf[i].copy_(values[a])

    @abstractmethod
    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        """Weights float32[T] such that the update is ``w^T G`` (``gram`` = ``G G^T``,
        float32[T, T]; ``losses`` float32[T], detached)."""

    def direction(self, G: Tensor, gram: Tensor | None, losses: Tensor,
                  combine: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The update float32[P] from the task gradients ``G`` [T, P]. ``combine(w, G)``
        computes ``w^T G`` (into the flat gradient buffer where there is one)."""
        w = self.task_weights(gram, losses)
        self.stats["weights"] = w.detach()
        return combine(w, G)

    def backward(
        self,
        losses: dict[str, Tensor],
        shared_params: Sequence[Tensor] = (),
        features: FeatureCut | None = None,
        scale: Callable[[Tensor], Tensor] = lambda t: t,
        micro: tuple[int, int] = (0, 1),
    ) -> dict[str, Tensor]:
        """Per-task gradients into the rows of G, the method's update into the shared
        parameters' ``.grad`` (``param``) or back through the backbone (``feature``).

        With AMP's loss scale s the rows hold s * g_i: the Gram matrix is divided by s^2 so the
        method sees true gradients, and the update stays scaled for ``GradScaler.unscale_``.
        ``micro`` = (i, k): micro-batch i of k accumulated into one step (mode ``param``):
        the rows add up the k calls' gradients / k and the method combines them in the last.
        Under torchrun the rows (``param``) or the Gram matrix (``feature``) are reduced over
        the ranks first. Returns the task weights (0-dim tensors; 1 for a method without
        weights or before the last micro-batch).
        """
        self.check_tasks(losses)
        tasks = list(losses)
        i, k = micro
        if k > 1 and self.mode != "param":
            raise ConfigError(f"balancer '{type(self).__name__}' in mode {self.mode!r} cannot "
                              "accumulate gradients (its update is back-propagated through "
                              "each batch's graph): use mode 'param' or train.accumulate 1")
        self._step_rows, self._k = [self.tasks.index(t) for t in tasks], k
        try:
            return self._backward(losses, tasks, shared_params, features, scale,
                                  first=i == 0, last=i == k - 1)
        finally:
            self._step_rows, self._k = None, 1

    def _backward(self, losses: dict[str, Tensor], tasks: list[str],
                  shared_params: Sequence[Tensor], features: FeatureCut | None,
                  scale: Callable[[Tensor], Tensor], first: bool = True,
                  last: bool = True) -> dict[str, Tensor]:
        L = torch.stack([losses[t].detach().float().reshape(()) for t in tasks])
        scaled = [scale(losses[t] / self._k if self._k > 1 else losses[t]) for t in tasks]
        s = scale(torch.ones((), device=L.device)).float()
        if self.mode == "param":
            targets = [p for p in shared_params if p.requires_grad]
            if not targets:
                raise ConfigError(f"balancer '{type(self).__name__}' (mode param) needs shared "
                                  "parameters; the model has none that train")
        else:
            if not isinstance(features, FeatureCut):
                raise TypeError("mode 'feature' needs the step's FeatureCut (see Trainer)")
            targets = features.leaves
        G = self.grads.collect(scaled, targets, zero=first)
        if not last:
            return {t: torch.ones((), device=L.device) for t in tasks}
        if self.mode == "param":
            # Rows are gradients of the shared parameters: their mean over the ranks is the
            # global batch's, one collective on the whole T x P buffer.
            all_reduce_mean_(G)
        gram = gram_matrix(G) / (s * s) if self.needs_gram else None
        if gram is not None and self.mode == "feature" and is_distributed():
            # Rows are per-sample feature gradients, disjoint across ranks: the global rows are
            # the ranks' rows / W side by side, so G G^T is the sum of the ranks' over W^2.
            gram = all_reduce_sum_(gram) / world_size() ** 2
        self.stats = {"gram": gram} if gram is not None else {}
        out = self.grads.out(targets, bind=self.mode == "param")

        def combine(w: Tensor, rows: Tensor) -> Tensor:
            return weighted_rows(w, rows, out=out)

        d = self.direction(G, gram, L, combine)
        if d.data_ptr() != out.data_ptr():
            out.copy_(d)
        if self.mode == "feature":
            grads, off = [], 0
            for f in features.source:
                grads.append(out[off:off + f.numel()].view_as(f))
                off += f.numel()
            torch.autograd.backward(features.source, grad_tensors=grads)
        w = self.stats.get("weights")
        if w is None:
            return {t: torch.ones((), device=L.device) for t in tasks}
        return {t: w[i] for i, t in enumerate(tasks)}
