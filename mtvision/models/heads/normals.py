"""Surface normal estimation on the shared features.

The decoder is the Panoptic-FPN branch of the depth head (``FPNDecoder``) with three output
channels, upsampled to the input size and L2-normalised per pixel. The loss is the cosine
distance 1 - cos(n, n*) = 1 - <n, n* / |n*|> averaged over the valid pixels (non-zero target)
of the present images, the loss of MTAN (Liu et al., "End-to-End Multi-Task Learning with
Attention", CVPR 2019) and LibMTL on NYUv2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.models.heads.base import FeatureInfo, TaskHead, presence_on
from mtvision.models.heads.decoder import FPNDecoder
from mtvision.registry import HEADS


def valid_normals(target: Tensor, present: Tensor) -> Tensor:
    """bool[B, H, W]: pixels whose target float[B, 3, H, W] is a finite non-zero vector, in the
    images that are ``present``."""
    keep = presence_on(present, target.device).reshape(-1, 1, 1).bool()
    return (target != 0).any(1) & torch.isfinite(target).all(1) & keep


def cosine_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean of 1 - cos(pred, target) over the ``valid`` pixels of the batch; 0 (with a gradient)
    when there is none. ``pred``, ``target``: [B, 3, H, W], ``valid``: [B, H, W]; the target is
    normalised here, ``pred`` is taken as it is (the head normalises it)."""
    safe = torch.where(valid[:, None], target, torch.ones_like(target))
    unit = safe / safe.norm(dim=1, keepdim=True)
    cos = (pred * unit).sum(1)
    err = torch.where(valid, 1.0 - cos, torch.zeros_like(cos))
    return err.sum() / valid.sum().clamp_min(1)


@HEADS.register("fpn_normals")
class FPNNormalsHead(TaskHead):
    """Panoptic-FPN surface normals head (module docstring).

    ``forward`` returns unit normals float[B, 3, H, W] at the input size, in the targets' axis
    convention. Loss component ``cos``: mean 1 - cos over valid pixels of present images, 0 with
    a gradient when there is none. ``postprocess``: per image float[3, H, W] unit normals.
    """

    task = "normals"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        channels: int = 64,
    ) -> None:
        super().__init__()
        self.decoder = FPNDecoder(feature_info, in_features, channels, "fpn_normals")
        self.in_features = self.decoder.in_features
        self.predictor = nn.Conv2d(channels, 3, 1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Unit normals float[B, 3, H, W] at ``image_size``."""
        raw = self.predictor(self.decoder(features))
        raw = F.interpolate(raw, size=tuple(image_size), mode="bilinear", align_corners=False)
        return F.normalize(raw, dim=1)

    def loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> dict[str, Tensor]:
        """``{"cos": mean (1 - cos)}`` over valid pixels of present images."""
        target = targets.to(outputs.device).float()
        pred = outputs.float()
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.normalize(F.interpolate(pred, size=target.shape[-2:], mode="bilinear",
                                             align_corners=False), dim=1)
        return {"cos": cosine_loss(pred, target, valid_normals(target, present))}

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the unit normal map float[3, H, W] at ``image_size``."""
        out = outputs.float()
        if out.shape[-2:] != tuple(image_size):
            out = F.normalize(F.interpolate(out, size=tuple(image_size), mode="bilinear",
                                            align_corners=False), dim=1)
        return list(out)
