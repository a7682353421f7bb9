"""Edge detection: holistically-nested side outputs (Xie & Tu, "Holistically-Nested Edge
Detection", ICCV 2015), with RCF-style side branches (Liu et al., "Richer Convolutional Features
for Edge Detection", CVPR 2017) on the shared backbone/FPN levels.

Every level in ``in_features`` gives one side output (a boundary logit map upsampled to the
input size); a 1x1 convolution over the stacked sides gives the fused output. Every output is
trained with HED's class-balanced cross-entropy (HED eq. 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.kernels import edge_bce_maps
from mtvision.models.heads.base import (
    DenseLoss,
    FeatureInfo,
    TaskHead,
    check_in_features,
    mask_absent,
    select_features,
)
from mtvision.registry import HEADS, ConfigError


@HEADS.register("hed")
class HEDEdgeHead(TaskHead):
    """HED/RCF edge head.

    ``forward`` returns ``{"sides": [float[B, 1, H, W] per in_feature], "fuse": float[B, 1, H,
    W]}`` (logits at the input size). Loss components: ``fuse`` (fuse_weight x class-balanced
    BCE of the fused map) and ``sides`` (side_weight x the sum over side outputs), all maps
    scored in one pass over the target by ``kernels.edge_bce_maps``.
    """

    task = "edge"
    dense_kind = "bce"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        in_features: Sequence[str] | None = None,
        side_channels: int = 16,
        side_weight: float = 1.0,
        fuse_weight: float = 1.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if in_features is None:
            # HED's finest side output sits at stride 2 (c1); backbones without a stride-2
            # level (ConvNeXt, Swin, ViT) start at the neck's p2.
            in_features = [n for n in ("c1", "p2", "p3", "p4", "p5") if n in feature_info]
        self.in_features = list(in_features)
        check_in_features(feature_info, self.in_features, "hed")
        if not self.in_features:
            raise ConfigError("head 'hed': in_features is empty")
        self.side_weight = float(side_weight)
        self.fuse_weight = float(fuse_weight)
        self.ignore_index = int(ignore_index)
        self.sides = nn.ModuleList()
        for name in self.in_features:
            in_ch = feature_info[name].channels
            if side_channels > 0:
                side: nn.Module = nn.Sequential(
                    nn.Conv2d(in_ch, side_channels, 3, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(side_channels, 1, 1),
                )
            else:
                side = nn.Conv2d(in_ch, 1, 1)
            self.sides.append(side)
        n = len(self.in_features)
        self.fuse = nn.Conv2d(n, 1, 1)
        # HED initialises the fusion weights to 1/n: the fused map starts as the mean of the
        # side outputs.
        nn.init.constant_(self.fuse.weight, 1.0 / n)
        nn.init.constant_(self.fuse.bias, 0.0)

    def forward(
        self, features: dict[str, Tensor], image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Side logits upsampled to ``image_size`` and their learned 1x1 fusion."""
        feats = select_features(features, self.in_features)
        sides = [
            F.interpolate(side(x), size=tuple(image_size), mode="bilinear", align_corners=False)
            for side, x in zip(self.sides, feats, strict=True)
        ]
        return {"sides": sides, "fuse": self.fuse(torch.cat(sides, dim=1))}

    def dense_loss(self, outputs: dict[str, Tensor], targets: Tensor,
                   present: Tensor) -> DenseLoss:
        fuse = outputs["fuse"]
        # One [B, K+1, H, W] tensor so a single kernel scores every map; the copy is of
        # single-channel maps, small next to the heads' activations.
        maps = torch.cat([*outputs["sides"], fuse], dim=1)
        target = mask_absent(targets.to(fuse.device), present, self.ignore_index)
        return DenseLoss(maps, target, self.ignore_index, {"balanced": True})

    def loss_from_dense(self, values: Tensor) -> dict[str, Tensor]:
        return {"fuse": self.fuse_weight * values[-1],
                "sides": self.side_weight * values[:-1].sum()}

    def loss(
        self, outputs: dict[str, Tensor], targets: Tensor, present: Tensor
    ) -> dict[str, Tensor]:
        """Class-balanced BCE (HED eq. 2, ``kernels.edge_bce``) of the fused and side outputs
        over the present images."""
        d = self.dense_loss(outputs, targets, present)
        return self.loss_from_dense(edge_bce_maps(
            d.logits, d.target, ignore_index=d.ignore_index, backend=self.loss_backend,
            **d.options))

    @torch.no_grad()
    def postprocess(self, outputs: dict[str, Tensor], image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the fused boundary probability float[H, W]."""
        fuse = outputs["fuse"].float()
        if fuse.shape[-2:] != tuple(image_size):
            fuse = F.interpolate(fuse, size=tuple(image_size), mode="bilinear", align_corners=False)
        return list(fuse.sigmoid()[:, 0])
