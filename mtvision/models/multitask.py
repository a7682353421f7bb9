"""The multi-task model: backbone -> neck -> a dict of task heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mtvision.models.heads.base import FeatureInfo, TaskHead
from mtvision.registry import BACKBONES, HEADS, NECKS, ConfigError


class MultiTaskModel(nn.Module):
    """One shared backbone and neck feeding any subset of task heads.

    ``forward`` returns the raw outputs of every head; ``losses`` and ``postprocess`` delegate
    to each head. ``extract`` and ``forward_heads`` split the two halves so a gradient balancer
    can differentiate with respect to the shared features.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None,
                 heads: dict[str, TaskHead]) -> None:
        super().__init__()
        if not heads:
            raise ConfigError("model.heads is empty: a model needs at least one task head")
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters shared by every task (backbone and neck)."""
        mods = [self.backbone] + ([self.neck] if self.neck is not None else [])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def extract(self, images: Tensor) -> dict[str, Tensor]:
        feats = self.backbone(images)
        if self.neck is not None:
            feats = {**feats, **self.neck(feats)}
        return feats

    def forward_heads(self, features: dict[str, Tensor], image_size: tuple[int, int],
                      tasks: list[str] | None = None) -> dict[str, Any]:
        return {t: self.heads[t](features, image_size) for t in (tasks or self.task_names)}

    def forward(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, Any]:
        image_size = (images.shape[-2], images.shape[-1])
        return self.forward_heads(self.extract(images), image_size, tasks)

    def losses(self, outputs: dict[str, Any], targets: dict[str, Any],
               present: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
        """Per task, its named loss components; tasks no image of the batch labels are left out."""
        out = {}
        for task, head in self.heads.items():
            if task in outputs and task in present and bool(present[task].any()):
                out[task] = head.loss(outputs[task], targets[task], present[task])
        return out

    def postprocess(self, outputs: dict[str, Any], image_size: tuple[int, int]) -> dict[str, list]:
        return {t: self.heads[t].postprocess(o, image_size) for t, o in outputs.items()}

    @torch.no_grad()
    def predict(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, list]:
        """Per task, one prediction per image, in input-image pixels."""
        was_training = self.training
        self.eval()
        try:
            outputs = self(images, tasks)
            return self.postprocess(outputs, (images.shape[-2], images.shape[-1]))
        finally:
            self.train(was_training)


def build_model(cfg: dict[str, Any]) -> MultiTaskModel:
    """Build from the ``model`` section: ``{"backbone": {...}, "neck": {...}, "heads": {...}}``."""
    backbone = BACKBONES.build(cfg["backbone"], "model.backbone")
    info: dict[str, FeatureInfo] = dict(backbone.feature_info)
    neck = None
    if cfg.get("neck"):
        neck = NECKS.build(cfg["neck"], "model.neck", feature_info=info)
        info.update(neck.feature_info)
    heads = {}
    for task, head_cfg in cfg["heads"].items():
        head = HEADS.build(head_cfg, f"model.heads.{task}", feature_info=info)
        if head.task != task:
            raise ConfigError(
                f"model.heads.{task}: head '{head_cfg['name']}' is a '{head.task}' head; "
                f"put it under model.heads.{head.task}"
            )
        heads[task] = head
    return MultiTaskModel(backbone, neck, heads)
