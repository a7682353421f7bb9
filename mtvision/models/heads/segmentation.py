"""Semantic segmentation: the semantic branch of Panoptic FPN (Kirillov et al., "Panoptic
Feature Pyramid Networks", CVPR 2019, sec. 3.2 and fig. 3).

Each FPN level goes through stages of conv3x3 + GroupNorm + ReLU + 2x bilinear upsampling until
it reaches the finest level's stride (the finest level gets one conv stage and no upsampling);
the levels are summed, a 1x1 conv gives class logits, and these are bilinearly upsampled to the
input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.kernels import seg_cross_entropy
from mtvision.models.heads.base import (
    DenseLoss,
    FeatureInfo,
    TaskHead,
    mask_absent,
    select_features,
)
from mtvision.models.heads.decoder import fpn_branches, fpn_merge
from mtvision.registry import HEADS, ConfigError


@HEADS.register("fpn_seg")
class FPNSegHead(TaskHead):
    """Panoptic-FPN semantic head.

    ``forward`` returns logits float[B, num_classes, H, W] at the input size. Loss component:
    ``ce`` (cross-entropy over the present images' non-ignored pixels, optionally class-weighted
    and label-smoothed), computed by the fused kernel ``kernels.seg_cross_entropy``.
    """

    task = "seg"
    dense_kind = "ce"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        num_classes: int,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        channels: int = 64,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        if num_classes < 1:
            raise ConfigError(f"head 'fpn_seg': num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ConfigError(f"head 'fpn_seg': label_smoothing must be in [0, 1], got "
                              f"{label_smoothing}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.branches, self.finest = fpn_branches(feature_info, self.in_features, channels,
                                                  "fpn_seg")
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        if class_weights is None:
            self.register_buffer("class_weights", None)
        else:
            if len(class_weights) != num_classes:
                raise ConfigError(
                    f"head 'fpn_seg': class_weights has {len(class_weights)} entries for "
                    f"{num_classes} classes"
                )
            self.register_buffer(
                "class_weights", torch.tensor([float(w) for w in class_weights])
            )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.predictor.weight, std=0.01)

    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Class logits float[B, num_classes, H, W] at ``image_size``."""
        out = fpn_merge(self.branches, self.finest, select_features(features,
                                                                    self.in_features))
        logits = self.predictor(out)
        return F.interpolate(logits, size=tuple(image_size), mode="bilinear", align_corners=False)

    def dense_loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> DenseLoss:
        target = mask_absent(targets.to(outputs.device), present, self.ignore_index)
        logits = outputs
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        return DenseLoss(logits, target, self.ignore_index,
                         {"weight": self.class_weights, "label_smoothing": self.label_smoothing})

    def loss_from_dense(self, values: Tensor) -> dict[str, Tensor]:
        return {"ce": values}

    def loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> dict[str, Tensor]:
        """``ce``: mean cross-entropy over non-ignored pixels of present images (weighted mean
        with ``class_weights``); 0 when every pixel is ignored."""
        d = self.dense_loss(outputs, targets, present)
        return self.loss_from_dense(seg_cross_entropy(
            d.logits, d.target, ignore_index=d.ignore_index, backend=self.loss_backend,
            **d.options))

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the arg-max class map long[H, W]."""
        if outputs.shape[-2:] != tuple(image_size):
            outputs = F.interpolate(
                outputs.float(), size=tuple(image_size), mode="bilinear", align_corners=False
            )
        return list(outputs.argmax(1))


@HEADS.register("fpn_parts")
class FPNPartsHead(FPNSegHead):
    """Human-part segmentation (PASCAL-Context's ``parts`` task: background and the body parts
    of the dataset's part grouping): the Panoptic-FPN semantic head with its own classes, trained
    and scored only on the images that carry part labels (those with people)."""

    task = "parts"
