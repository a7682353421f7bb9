"""Monocular depth estimation on the shared features.

Decoder: the Panoptic-FPN semantic branch shared with ``fpn_seg`` (``heads/decoder.py``), then
a 1x1 convolution to one channel, bilinearly upsampled to the input size.

Depth is made positive by ``softplus`` (default; smooth, linear for large values) or ``exp``
(the network then predicts log depth, as Eigen et al. do).

Losses, over the valid pixels (target > 0) of the present images only:
  ``l1``     mean |d - d*| over all valid pixels of the batch (MTAN / LibMTL's NYUv2 depth loss).
  ``silog``  the scale-invariant log loss of Eigen et al., "Depth Map Prediction from a Single
             Image using a Multi-Scale Deep Network", NIPS 2014, eq. 4: per image, with
             g_i = log d_i - log d*_i over its n valid pixels,
             D = 1/n sum_i g_i^2 - lambda / n^2 (sum_i g_i)^2,
             averaged over the images that have valid pixels. lambda = 0 is the L2 loss of log
             depth, lambda = 1 the fully scale-invariant error; Eigen train with 0.5; the default
             0.85 is that of BTS (Lee et al., 2019) and AdaBins (Bhat et al., CVPR 2021), which
             report sqrt(D) (x 10) instead; the minimiser is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.models.heads.base import (
    FeatureInfo,
    TaskHead,
    presence_on,
)
from mtvision.models.heads.decoder import FPNDecoder
from mtvision.registry import HEADS, ConfigError

# Raw outputs are clamped to this before ``exp`` (depths from e^-20 to e^20 in any unit).
_MAX_LOG_DEPTH = 20.0
# ``log`` of a softplus depth is taken at no less than this.
_MIN_DEPTH = 1e-6


def valid_depth(target: Tensor, present: Tensor) -> Tensor:
    """bool[B, H, W]: pixels with a finite depth > 0 in the images that are ``present``."""
    keep = presence_on(present, target.device).reshape(-1, 1, 1).bool()
    return (target > 0) & torch.isfinite(target) & keep


def depth_l1_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean |pred - target| over the ``valid`` pixels of the batch; 0 (with a gradient) when
    there is none. ``pred``, ``target``, ``valid``: [B, H, W]."""
    err = torch.where(valid, (pred - target).abs(), torch.zeros_like(pred))
    return err.sum() / valid.sum().clamp_min(1)


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor, lam: float = 0.85) -> Tensor:
    """Eigen et al. 2014, eq. 4, per image, averaged over the images with valid pixels:
    ``1/n sum g^2 - lam/n^2 (sum g)^2`` with ``g = log pred - log target``; 0 (with a gradient)
    when no pixel is valid. ``pred``, ``target``, ``valid``: [B, H, W]."""
    log_pred = torch.log(pred.clamp_min(_MIN_DEPTH))
    log_target = torch.log(torch.where(valid, target, torch.ones_like(target)))
    g = torch.where(valid, log_pred - log_target, torch.zeros_like(pred))
    n = valid.flatten(1).sum(1)
    per_n = n.clamp_min(1).to(g.dtype)
    mean_g2 = g.pow(2).flatten(1).sum(1) / per_n
    mean_g = g.flatten(1).sum(1) / per_n
    per_image = mean_g2 - lam * mean_g.pow(2)
    has = n > 0
    return torch.where(has, per_image, torch.zeros_like(per_image)).sum() / has.sum().clamp_min(1)


@HEADS.register("fpn_depth")
class FPNDepthHead(TaskHead):
    """Panoptic-FPN depth head (module docstring).

    ``forward`` returns positive depth float[B, 1, H, W] at the input size, in the targets' unit.
    Loss component: ``l1`` or ``silog`` (option ``loss``; ``silog_lambda`` is Eigen's lambda),
    over valid pixels (target > 0) of present images; 0 with a gradient when there is none.
    ``postprocess``: per image float[H, W] depth.
    """

    task = "depth"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        channels: int = 64,
        loss: str = "l1",
        silog_lambda: float = 0.85,
        activation: str = "softplus",
    ) -> None:
        super().__init__()
        if loss not in ("l1", "silog"):
            raise ConfigError(f"head 'fpn_depth': loss must be 'l1' or 'silog', got {loss!r}")
        if activation not in ("softplus", "exp"):
            raise ConfigError(f"head 'fpn_depth': activation must be 'softplus' or 'exp', got "
                              f"{activation!r}")
        if not 0.0 <= silog_lambda <= 1.0:
            raise ConfigError(f"head 'fpn_depth': silog_lambda must be in [0, 1], got "
                              f"{silog_lambda}")
        self.decoder = FPNDecoder(feature_info, in_features, channels, "fpn_depth")
        self.in_features = self.decoder.in_features
        self.loss_name = loss
        self.silog_lambda = float(silog_lambda)
        self.activation = activation
        self.predictor = nn.Conv2d(channels, 1, 1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def to_depth(self, raw: Tensor) -> Tensor:
        """The positive depth of raw outputs: softplus(raw) or exp(raw)."""
        if self.activation == "exp":
            return torch.exp(raw.clamp(-_MAX_LOG_DEPTH, _MAX_LOG_DEPTH))
        return F.softplus(raw)

    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Depth float[B, 1, H, W] at ``image_size``."""
        raw = self.predictor(self.decoder(features))
        raw = F.interpolate(raw, size=tuple(image_size), mode="bilinear", align_corners=False)
        return self.to_depth(raw)

    def loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> dict[str, Tensor]:
        """``{"l1": ...}`` or ``{"silog": ...}`` (module docstring)."""
        target = targets.to(outputs.device).float()
        pred = outputs.float()
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear",
                                 align_corners=False)
        pred = pred[:, 0]
        valid = valid_depth(target, present)
        if self.loss_name == "silog":
            return {"silog": silog_loss(pred, target, valid, self.silog_lambda)}
        return {"l1": depth_l1_loss(pred, target, valid)}

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Per image the depth map float[H, W] at ``image_size``."""
        out = outputs.float()
        if out.shape[-2:] != tuple(image_size):
            out = F.interpolate(out, size=tuple(image_size), mode="bilinear",
                                align_corners=False)
        return list(out[:, 0])
