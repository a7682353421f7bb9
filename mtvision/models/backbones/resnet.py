"""torchvision ResNets as multi-scale feature extractors (He et al., "Deep Residual Learning for
Image Recognition", CVPR 2016)."""

from __future__ import annotations

from torch import nn

from mtvision.models.backbones.base import StagedBackbone, register_archs, torchvision_net

_BLOCK_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256}


class ResNetBackbone(StagedBackbone):
    """Returns ``{"c1": stride 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32}`` feature maps.

    ``pretrained`` is a torchvision weights name (e.g. ``"IMAGENET1K_V1"``, downloaded when
    online) or the path of a local ``.pth`` state dict; ``frozen_stages`` freezes the stem
    (1) and the first residual stages (2..5) for fine-tuning; ``norm_eval`` keeps every
    BatchNorm's statistics fixed; ``checkpointing`` recomputes each stage's activations in
    backward. torchvision's ResNets have no stochastic depth: ``drop_path`` must be 0.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 norm_eval: bool = False, drop_path: float = 0.0,
                 checkpointing: bool = False) -> None:
        net = torchvision_net(arch, pretrained, frozen_stages, drop_path, checkpointing,
                              has_drop_path=False)
        c = _BLOCK_CHANNELS[arch]
        super().__init__(
            arch, nn.Sequential(net.conv1, net.bn1, net.relu),
            [net.layer1, net.layer2, net.layer3, net.layer4], [c, c * 2, c * 4, c * 8],
            c1_channels=64, pool=net.maxpool, frozen_stages=frozen_stages,
            checkpointing=checkpointing, norm_eval=norm_eval)


register_archs(ResNetBackbone, _BLOCK_CHANNELS)

__all__ = ["ResNetBackbone"]
