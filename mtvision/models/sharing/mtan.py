"""Multi-Task Attention Network (Liu, Johns & Davison, CVPR 2019: "End-to-End Multi-Task
Learning with Attention").

One shared backbone and neck; each task learns a soft attention mask per feature level it
reads and its head sees the attended features ``f * a`` with

    a = sigmoid(conv1x1(relu(bn(conv1x1(f)))))   in (0, 1), element-wise over (C, H, W).

This is MTAN's attention module applied to each pyramid level independently (the paper also
feeds the previous level's attended feature to the next mask, through its encoder's blocks).
The masks are task-specific parameters: they are not among the shared parameters, and the
feature cut of gradient balancing is the shared features before attention.
"""

from __future__ import annotations

from torch import Tensor, nn

from mtvision.models.sharing.base import SharingParts
from mtvision.models.sharing.hard import HardSharing
from mtvision.registry import SHARING, ConfigError


class AttentionMask(nn.Module):
    """``f -> f * sigmoid(conv1x1(relu(bn(conv1x1(f)))))`` with ``hidden`` middle channels."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def mask(self, f: Tensor) -> Tensor:
        """The attention mask a, in (0, 1), of f's shape."""
        return self.net(f)

    def forward(self, f: Tensor) -> Tensor:
        return f * self.net(f)


@SHARING.register("mtan")
class MTAN(HardSharing):
    """Shared encoder as in hard sharing; per task, an ``AttentionMask`` for each feature its
    head reads (its ``in_features``; every encoder feature when the head does not say).

    ``hidden``: the masks' middle channels (default 64; MTAN uses the level's own width, which
    ``hidden`` equal to the neck channels reproduces).
    """

    name = "mtan"

    def __init__(self, parts: SharingParts, hidden: int = 64) -> None:
        super().__init__(parts)
        if hidden < 1:
            raise ConfigError(f"model.sharing.hidden must be >= 1, got {hidden}")
        info = dict(parts.backbone.feature_info)
        if parts.neck is not None:
            info.update(parts.neck.feature_info)
        self.attention = nn.ModuleDict({
            task: nn.ModuleDict({n: AttentionMask(info[n].channels, hidden)
                                 for n in getattr(head, "in_features", list(info))})
            for task, head in parts.heads.items()})

    def task_features(self, features: dict[str, Tensor], task: str) -> dict[str, Tensor]:
        return {**features, **{n: m(features[n]) for n, m in self.attention[task].items()}}
