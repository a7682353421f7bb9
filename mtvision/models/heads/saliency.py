"""Saliency: a binary dense map, decoded like the other dense heads (the Panoptic-FPN branch of
``heads/decoder.py``) to one logit per pixel, trained with the class-balanced binary
cross-entropy that the edge head uses (HED eq. 2, ``kernels.edge_bce_maps``): ASTMT and the
Multi-Task-Learning-PyTorch code base train PASCAL-Context saliency with that balanced loss,
whose weights come from each batch's share of salient pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.kernels import edge_bce_maps
from mtvision.models.heads.base import DenseLoss, FeatureInfo, TaskHead, mask_absent
from mtvision.models.heads.decoder import FPNDecoder
from mtvision.registry import HEADS


@HEADS.register("fpn_sal")
class FPNSaliencyHead(TaskHead):
    """Saliency head.

    ``forward`` returns logits float[B, 1, H, W] at the input size. Loss component ``bce``:
    the class-balanced BCE (``balanced: false``: plain BCE) over the non-ignored pixels of the
    present images; with a seg head on the same grid the model computes it in the same kernel
    launch as the seg loss. ``postprocess``: per image the probability float[H, W].
    """

    task = "sal"
    dense_kind = "bce"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        channels: int = 64,
        balanced: bool = True,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.decoder = FPNDecoder(feature_info, in_features, channels, "fpn_sal")
        self.in_features = self.decoder.in_features
        self.balanced = bool(balanced)
        self.ignore_index = int(ignore_index)
        self.predictor = nn.Conv2d(channels, 1, 1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Saliency logits float[B, 1, H, W] at ``image_size``."""
        logits = self.predictor(self.decoder(features))
        return F.interpolate(logits, size=tuple(image_size), mode="bilinear", align_corners=False)

    def dense_loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> DenseLoss:
        target = mask_absent(targets.to(outputs.device), present, self.ignore_index)
        logits = outputs
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return DenseLoss(logits, target, self.ignore_index, {"balanced": self.balanced})

    def loss_from_dense(self, values: Tensor) -> dict[str, Tensor]:
        return {"bce": values[-1]}

    def loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> dict[str, Tensor]:
        """``bce`` of the map over the present images' non-ignored pixels."""
        d = self.dense_loss(outputs, targets, present)
        return self.loss_from_dense(edge_bce_maps(
            d.logits, d.target, ignore_index=d.ignore_index, backend=self.loss_backend,
            **d.options))

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the saliency probability float[H, W]."""
        out = outputs.float()
        if out.shape[-2:] != tuple(image_size):
            out = F.interpolate(out, size=tuple(image_size), mode="bilinear",
                                align_corners=False)
        return list(out.sigmoid()[:, 0])
