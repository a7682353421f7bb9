"""The Panoptic-FPN semantic branch that the dense heads (seg, depth, normals) decode with.

Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019, sec. 3.2: every level is
brought to the finest level's stride by conv3x3 + GroupNorm + ReLU + 2x upsampling stages, and
the levels are summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.models.heads.base import FeatureInfo, check_in_features, group_norm, select_features
from mtvision.registry import ConfigError


def fpn_branches(feature_info: dict[str, FeatureInfo], in_features: Sequence[str],
                 channels: int, head: str) -> tuple[nn.ModuleList, int]:
    """One branch per level of ``in_features`` and the index of the finest level.

    ``head`` names the head in error messages. The caller initialises the weights (after
    building its own layers, so seeded runs draw in the same order as before).
    """
    names = list(in_features)
    check_in_features(feature_info, names, head)
    if not names:
        raise ConfigError(f"head '{head}': in_features is empty")
    if channels < 1:
        raise ConfigError(f"head '{head}': channels must be >= 1, got {channels}")
    strides = [feature_info[n].stride for n in names]
    finest = min(strides)
    branches = nn.ModuleList()
    for name, stride in zip(names, strides, strict=True):
        n_up = math.log2(stride / finest)
        if n_up != int(n_up):
            raise ConfigError(f"head '{head}': stride {stride} of '{name}' is not a power-of-two "
                              f"multiple of the finest stride {finest}")
        in_ch = feature_info[name].channels
        stages: list[nn.Module] = []
        for _ in range(max(int(n_up), 1)):
            stages += [nn.Conv2d(in_ch, channels, 3, padding=1, bias=False),
                       group_norm(channels), nn.ReLU(inplace=True)]
            if n_up >= 1:
                stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            in_ch = channels
        branches.append(nn.Sequential(*stages))
    return branches, strides.index(finest)


def fpn_merge(branches: nn.ModuleList, finest: int, feats: list[Tensor]) -> Tensor:
    """The sum of the branches' outputs at the finest level's size."""
    size = feats[finest].shape[-2:]
    out: Tensor | float = 0.0
    for branch, x in zip(branches, feats, strict=True):
        y = branch(x)
        if y.shape[-2:] != size:
            # Inputs not divisible by the coarsest stride make 2x upsampling overshoot by a
            # pixel; align every level to the finest one.
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        out = out + y
    assert isinstance(out, Tensor)
    return out


class FPNDecoder(nn.Module):
    """Multi-scale features -> float[B, channels, H/s, W/s] at the finest stride ``s`` of
    ``in_features`` (the depth and normals heads' decoder)."""

    def __init__(self, feature_info: dict[str, FeatureInfo], in_features: Sequence[str],
                 channels: int, head: str) -> None:
        super().__init__()
        self.in_features = list(in_features)
        self.branches, self.finest = fpn_branches(feature_info, self.in_features, channels, head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return fpn_merge(self.branches, self.finest, select_features(features, self.in_features))
