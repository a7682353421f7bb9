"""The interface every task head implements.

A head receives the shared multi-scale features and returns raw outputs; it owns its loss and
its post-processing, so the multi-task model stays generic.

Features: ``features`` is a dict name -> Tensor[B, C, H/stride, W/stride] holding the backbone
levels (``c1`` stride 2 ... ``c5`` stride 32, whichever the backbone gives) and the neck
levels (``p2`` stride 4 ... ``p5`` stride 32). ``feature_info`` maps the same names to
``FeatureInfo(channels, stride)``; a head picks its inputs by name (``in_features`` option).

Targets (one batch, from ``mtvision.data.collate``), per task:
  det  list (len B) of {"boxes": float[K, 4] xyxy in input pixels, "labels": long[K]}
  seg  long[B, H, W], class ids, 255 = ignore
  edge long[B, H, W], 0 / 1, 255 = ignore
  cls  long[B] (single label, -1 = absent) or float[B, C] multi-hot (multi-label)
``present`` is bool[B]: which images carry this task's labels. A head's loss uses only those.

Predictions (``postprocess``), a list with one entry per image:
  det  {"boxes": float[K, 4] xyxy input pixels, "scores": float[K], "labels": long[K]}
  seg  long[H, W] class map
  edge float[H, W] boundary probability in [0, 1]
  cls  {"label": int, "score": float, "probs": float[C]}  (multi-label: "labels": list[int])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn


class FeatureInfo(NamedTuple):
    channels: int
    stride: int


class DenseLoss(NamedTuple):
    """A dense head's loss as the fused kernels take it (``kernels.dense_losses``), of the
    head's ``dense_kind``: logits [B, C, H, W] for ``"ce"`` (softmax cross-entropy) or
    [B, K, H, W] for ``"bce"`` (HED's class-balanced BCE of K maps sharing one target);
    ``target`` [B, H, W] with the images whose labels are absent set to ``ignore_index``;
    ``options``: that kernel's keyword arguments (``weight``/``label_smoothing`` for ce,
    ``balanced`` for bce).
    """

    logits: Tensor
    target: Tensor
    ignore_index: int
    options: dict[str, Any]


class TaskHead(nn.Module, ABC):
    """Base class of task heads. Subclasses set ``task`` and implement the three methods.

    ``loss_backend`` (``"auto"``, ``"triton"`` or ``"torch"``) selects the loss kernels; the
    model sets it from ``model.loss_backend``. A dense head may also set ``dense_kind`` and
    implement ``dense_loss`` and ``loss_from_dense`` so that the model computes its loss
    together with the other dense heads' in one kernel launch.
    """

    task: ClassVar[str] = ""
    dense_kind: ClassVar[str | None] = None  # "ce" or "bce": the form of ``dense_loss``
    loss_backend: str = "auto"

    def dense_loss(self, outputs: Any, targets: Any, present: Tensor) -> DenseLoss | None:
        """This head's loss in the fused kernels' terms, or None when it has none."""
        return None

    def loss_from_dense(self, values: Tensor) -> dict[str, Tensor]:
        """The named loss components from the kernel's result for ``dense_loss``."""
        raise TypeError(f"{type(self).__name__} has no dense loss")

    @abstractmethod
    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Any:
        """Raw outputs for the batch (logits, regressions...)."""

    @abstractmethod
    def loss(self, outputs: Any, targets: Any, present: Tensor) -> dict[str, Tensor]:
        """Named loss components (scalars); their sum is the task loss."""

    @abstractmethod
    def postprocess(self, outputs: Any, image_size: tuple[int, int]) -> list[Any]:
        """Per-image predictions in the format documented above."""


def presence_on(present: Tensor, device: torch.device) -> Tensor:
    """The bool[B] flags on ``device``. The trainer keeps them on the host, where the decisions
    on them (which tasks, which images) cost no device sync; the copy for a mask is
    asynchronous."""
    return torch.as_tensor(present).reshape(-1).to(device, non_blocking=True)


def mask_absent(target: Tensor, present: Tensor, ignore_index: int) -> Tensor:
    """``target`` [B, ...] with the images not ``present`` set to ``ignore_index``: a loss
    over every image then equals the loss over the present ones, without gathering logits."""
    keep = presence_on(present, target.device).reshape(-1, *([1] * (target.dim() - 1)))
    return torch.where(keep, target, torch.full_like(target, ignore_index))


def select_features(features: dict[str, Tensor], names: list[str]) -> list[Tensor]:
    return [features[n] for n in names]


def check_in_features(feature_info: dict[str, FeatureInfo], names: list[str], head: str) -> None:
    from mtvision.registry import ConfigError, closest

    for n in names:
        if n not in feature_info:
            raise ConfigError(
                f"head '{head}' asks for feature '{n}'{closest(n, list(feature_info))}; "
                f"available: {', '.join(feature_info)}"
            )


def group_norm(channels: int, max_groups: int = 32, min_group_size: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels`` and
    leaves at least ``min_group_size`` channels per group (GN's 32 groups of 8 at 256 channels;
    groups of one channel would be instance norm, which slows narrow heads down)."""
    limit = max(1, min(max_groups, channels // min_group_size))
    groups = next(g for g in range(limit, 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)
