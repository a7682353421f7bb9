"""Feature Pyramid Network neck (Lin et al. 2017) over the backbone's c2..c5."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from mtvision.models.heads.base import FeatureInfo, check_in_features
from mtvision.registry import NECKS


@NECKS.register("fpn")
class FPN(nn.Module):
    """Top-down FPN: ``in_features`` c2..c5 -> ``p2..p5`` with ``channels`` channels each.

    Output names follow the input strides (c3 -> p3 ...), so heads can ask for any level.
    """

    def __init__(self, feature_info: dict[str, FeatureInfo],
                 in_features: tuple[str, ...] | list[str] = ("c2", "c3", "c4", "c5"),
                 channels: int = 128) -> None:
        super().__init__()
        self.in_features = list(in_features)
        check_in_features(feature_info, self.in_features, "fpn")
        self.fpn = FeaturePyramidNetwork([feature_info[n].channels for n in self.in_features],
                                         channels)
        self.out_names = ["p" + n[1:] for n in self.in_features]
        self.feature_info = {
            o: FeatureInfo(channels, feature_info[i].stride)
            for o, i in zip(self.out_names, self.in_features, strict=True)
        }

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.fpn({n: feats[n] for n in self.in_features})
        return dict(zip(self.out_names, out.values(), strict=True))
