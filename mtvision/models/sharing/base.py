"""The interface of a parameter-sharing architecture (how the tasks share the encoder).

A ``MultiTaskModel`` holds its backbone(s) and neck(s) as ``model.backbone`` / ``model.neck``
(one shared module, or an ``nn.ModuleDict`` of per-task copies when ``per_task``) and a
``Sharing`` module, ``model.sharing``, that owns only the architecture's own parameters
(attention masks, cross-stitch units) and says how images flow to the heads:

* ``extract(backbone, neck, images)`` -> the encoder's features; with per-task encoders the
  names are ``"task/name"`` (e.g. ``"seg/p3"``);
* ``task_features(features, task)`` -> the features the head of ``task`` reads;
* ``shared_parameters`` (gradient balancing, mode ``param``), ``head_inputs`` (the feature cut
  of mode ``feature``), ``regularization`` (a penalty added to the training loss).

Keeping the encoders on the model leaves the parameter names (``backbone.*``, ``neck.*``) and
so the checkpoints of hard sharing as they were, and ``train.optimizer.backbone_lr_mult``
applies to every backbone copy.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

from torch import Tensor, nn

from mtvision.models.heads.base import TaskHead
from mtvision.registry import ConfigError


class SharingParts(NamedTuple):
    """What ``build_model`` hands a sharing architecture: one backbone and neck built from the
    config, the task heads (in the model's task order) and the backbone's config name."""

    backbone: nn.Module
    neck: nn.Module | None
    heads: Mapping[str, TaskHead]
    backbone_name: str = ""


def task_key(task: str, name: str) -> str:
    """The name of feature ``name`` of ``task``'s own encoder in a per-task feature dict."""
    return f"{task}/{name}"


class Sharing(nn.Module, ABC):
    """Base class of the sharing architectures registered in ``mtvision.registry.SHARING``."""

    name: ClassVar[str] = ""
    per_task: ClassVar[bool] = False  # model.backbone / model.neck: ModuleDicts of copies
    shared_features: ClassVar[bool] = True  # a feature cut exists (balancer.mode feature)

    def __init__(self, parts: SharingParts) -> None:
        super().__init__()
        self.tasks = list(parts.heads)

    def encoders(self, parts: SharingParts) -> tuple[nn.Module, nn.Module | None]:
        """The model's ``backbone`` and ``neck``: ``parts``' own (shared by the tasks)."""
        return parts.backbone, parts.neck

    @abstractmethod
    def extract(self, backbone: nn.Module, neck: nn.Module | None, images: Tensor,
                tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        """The encoder features of ``images`` (at least those ``tasks`` need; None: all)."""

    @abstractmethod
    def task_features(self, features: dict[str, Tensor], task: str) -> dict[str, Tensor]:
        """The features the head of ``task`` reads, from ``extract``'s output."""

    @abstractmethod
    def shared_parameters(self, backbone: nn.Module, neck: nn.Module | None
                          ) -> list[nn.Parameter]:
        """The trainable parameters on which more than one task loss depends."""

    @abstractmethod
    def head_inputs(self, backbone: nn.Module, neck: nn.Module | None) -> list[str]:
        """The shared feature names some head reads: the cut of feature-mode balancing."""

    def regularization(self, backbone: nn.Module, neck: nn.Module | None) -> Tensor | None:
        """A term added once per step to the training loss, or None when there is none."""
        return None

    def no_weight_decay(self) -> set[str]:
        """Names (in this module) of parameters the optimizer must not decay."""
        return set()


class PerTaskSharing(Sharing):
    """Base of the architectures with one backbone (and neck) copy per task.

    The copies start identical (deep copies of the one built from the config, so pretrained
    weights are loaded once); ``extract`` names the features ``"task/name"``.
    """

    per_task = True
    shared_features = False

    def encoders(self, parts: SharingParts) -> tuple[nn.Module, nn.Module | None]:
        def copies(module: nn.Module) -> nn.ModuleDict:
            return nn.ModuleDict({t: module if i == 0 else copy.deepcopy(module)
                                  for i, t in enumerate(self.tasks)})

        return copies(parts.backbone), (copies(parts.neck) if parts.neck is not None else None)

    def task_features(self, features: dict[str, Tensor], task: str) -> dict[str, Tensor]:
        prefix = task_key(task, "")
        return {k[len(prefix):]: v for k, v in features.items() if k.startswith(prefix)}

    def head_inputs(self, backbone: nn.Module, neck: nn.Module | None) -> list[str]:
        raise ConfigError(f"model.sharing '{self.name}' gives each task its own backbone: there "
                          "are no shared features for balancer.mode 'feature' (use mode param)")
