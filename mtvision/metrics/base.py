"""The interface every task metric implements.

A metric follows the process / compute split of mmsegmentation's ``IoUMetric``: ``update``
keeps the images whose task labels are present and hands them to ``process``, which reduces
each batch to compact per-sample (or running) statistics in ``self.results``; ``compute``
turns everything accumulated since the last ``reset`` into scores with ``compute_metrics``.

Prediction and target formats per task are those documented in
``mtvision.models.heads.base``; this package imports nothing from ``mtvision.models``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class Metric(ABC):
    """Accumulates predictions over a dataset and scores them; fractions are in [0, 1]."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.num_samples = 0

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.results = []
        self.num_samples = 0

    def update(
        self, preds: list, targets: Any, present: torch.Tensor | Sequence[bool] | None = None
    ) -> None:
        """Add one batch: ``preds`` has one entry per image, ``targets`` is the batch target.

        Only images where ``present`` (bool[B]) is True are used; ``None`` means all of them.
        """
        if present is None:
            keep = [True] * len(preds)
        else:
            flags = present.tolist() if isinstance(present, torch.Tensor) else list(present)
            keep = [bool(k) for k in flags]
        if len(keep) != len(preds):
            raise ValueError(f"present has {len(keep)} entries for {len(preds)} predictions")
        if not any(keep):
            return
        kept_preds = [p for p, k in zip(preds, keep, strict=True) if k]
        self.process(kept_preds, select_batch(targets, keep))
        self.num_samples += len(kept_preds)

    @abstractmethod
    def process(self, preds: list, targets: Any) -> None:
        """Reduce one (already filtered) batch to statistics appended to ``self.results``."""

    @abstractmethod
    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        """Scores from the accumulated ``results``."""

    def compute(self) -> dict[str, Any]:
        """Scores over everything seen since the last ``reset``."""
        return self.compute_metrics(self.results)

    def merge(self, results: list[Any], num_samples: int) -> None:
        """Add what another accumulator of the same metric gathered (another rank's share of
        the dataset): afterwards ``compute`` scores the union. Metrics that keep one running
        total instead of per-batch entries override this to add the totals."""
        self.results.extend(results)
        self.num_samples += num_samples


def select_batch(targets: Any, keep: Sequence[bool]) -> Any:
    """The entries of a batch-level target (tensor, array or per-image list) where ``keep``."""
    if isinstance(targets, torch.Tensor):
        return targets[torch.as_tensor(list(keep), dtype=torch.bool, device=targets.device)]
    if isinstance(targets, np.ndarray):
        return targets[np.asarray(keep, dtype=bool)]
    if isinstance(targets, (list, tuple)):
        if len(targets) != len(keep):
            raise ValueError(f"targets has {len(targets)} entries but present has {len(keep)}")
        return [t for t, k in zip(targets, keep, strict=True) if k]
    raise TypeError(f"unsupported target type {type(targets).__name__}")


def class_name_list(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """``class_names`` checked against ``num_classes``, or the class ids as strings."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return list(class_names)


def to_numpy(x: Any) -> np.ndarray:
    """A CPU numpy view/copy of a tensor, array or nested list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
