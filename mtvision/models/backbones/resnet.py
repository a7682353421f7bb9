"""torchvision ResNets as multi-scale feature extractors (He et al. 2016)."""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

from mtvision.models.backbones.weights import load_pretrained
from mtvision.models.heads.base import FeatureInfo
from mtvision.registry import BACKBONES

_BLOCK_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256}


class ResNetBackbone(nn.Module):
    """Returns ``{"c1": stride 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32}`` feature maps.

    ``pretrained`` is a torchvision weights name (e.g. ``"IMAGENET1K_V1"``, downloaded when
    online) or the path of a local ``.pth`` state dict; ``frozen_stages`` freezes the stem
    (1) and the first residual stages (2..5) for fine-tuning.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 norm_eval: bool = False) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        if pretrained:
            load_pretrained(net, arch, pretrained)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        c = _BLOCK_CHANNELS[arch]
        self.feature_info = {
            "c1": FeatureInfo(64, 2),
            "c2": FeatureInfo(c, 4),
            "c3": FeatureInfo(c * 2, 8),
            "c4": FeatureInfo(c * 4, 16),
            "c5": FeatureInfo(c * 8, 32),
        }
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze()

    def _freeze(self) -> None:
        stages = [self.stem, *self.layers][: self.frozen_stages]
        for m in stages:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetBackbone:
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            # Small fine-tuning batches give noisy statistics; keep the pretrained ones.
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = {"c1": self.stem(x)}
        x = self.pool(out["c1"])
        for i, layer in enumerate(self.layers):
            x = layer(x)
            out[f"c{i + 2}"] = x
        return out


def _make(arch: str):
    def build(pretrained: str | None = None, frozen_stages: int = 0,
              norm_eval: bool = False) -> ResNetBackbone:
        return ResNetBackbone(arch, pretrained, frozen_stages, norm_eval)

    build.__name__ = arch
    build.__doc__ = f"torchvision {arch} feature extractor (see ResNetBackbone)."
    return build


for _arch in _BLOCK_CHANNELS:
    BACKBONES.register(_arch)(_make(_arch))

__all__ = ["ResNetBackbone"]
