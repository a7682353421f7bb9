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

from mtvision.models.heads.base import FeatureInfo, TaskHead, check_in_features, select_features
from mtvision.registry import HEADS, ConfigError


def class_balanced_bce(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """HED's class-balanced binary cross-entropy (Xie & Tu 2015, eq. 2).

    For image n, ``beta_n = |Y-_n| / (|Y+_n| + |Y-_n|)`` over its non-ignored pixels; a positive
    pixel weighs ``beta_n``, a negative ``1 - beta_n``, an ignored one 0. The weighted per-pixel
    BCE-with-logits is summed and divided by the number of non-ignored pixels in the batch
    (0, still attached to ``logits``, when there are none).

    ``logits``: float[B, 1, H, W] or [B, H, W]; ``target``: [B, H, W] with 0 / 1 (any value
    > 0 counts as edge) and ``ignore_index``.
    """
    logits = logits.float().reshape(target.shape)
    valid = target != ignore_index
    pos = valid & (target > 0)
    neg = valid & ~pos
    dims = tuple(range(1, target.dim()))
    n_pos = pos.sum(dims).float()
    n_neg = neg.sum(dims).float()
    beta = n_neg / (n_pos + n_neg).clamp_min(1.0)
    beta = beta.reshape(-1, *([1] * (target.dim() - 1)))
    weight = torch.where(pos, beta, torch.zeros_like(beta)) + torch.where(
        neg, 1.0 - beta, torch.zeros_like(beta)
    )
    bce = F.binary_cross_entropy_with_logits(logits, pos.float(), weight=weight, reduction="sum")
    return bce / valid.sum().clamp_min(1)


@HEADS.register("hed")
class HEDEdgeHead(TaskHead):
    """HED/RCF edge head.

    ``forward`` returns ``{"sides": [float[B, 1, H, W] per in_feature], "fuse": float[B, 1, H,
    W]}`` (logits at the input size). Loss components: ``fuse`` (fuse_weight x class-balanced
    BCE of the fused map) and ``sides`` (side_weight x the sum over side outputs).
    """

    task = "edge"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        in_features: Sequence[str] = ("c1", "p2", "p3", "p4", "p5"),
        side_channels: int = 16,
        side_weight: float = 1.0,
        fuse_weight: float = 1.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
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

    def loss(
        self, outputs: dict[str, Tensor], targets: Tensor, present: Tensor
    ) -> dict[str, Tensor]:
        """Class-balanced BCE of the fused and side outputs over the present images."""
        fuse = outputs["fuse"]
        sel = torch.as_tensor(present, device=fuse.device).reshape(-1).nonzero().reshape(-1)
        target = targets.to(fuse.device)[sel]
        loss_fuse = class_balanced_bce(fuse[sel], target, self.ignore_index)
        loss_sides = sum(
            (class_balanced_bce(s[sel], target, self.ignore_index) for s in outputs["sides"]),
            torch.zeros((), device=fuse.device),
        )
        return {"fuse": self.fuse_weight * loss_fuse, "sides": self.side_weight * loss_sides}

    @torch.no_grad()
    def postprocess(self, outputs: dict[str, Tensor], image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the fused boundary probability float[H, W]."""
        fuse = outputs["fuse"].float()
        if fuse.shape[-2:] != tuple(image_size):
            fuse = F.interpolate(fuse, size=tuple(image_size), mode="bilinear", align_corners=False)
        return list(fuse.sigmoid()[:, 0])
