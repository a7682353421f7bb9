"""torchvision MobileNetV3-Large as a multi-scale feature extractor (Howard et al., "Searching
for MobileNetV3", ICCV 2019)."""

from __future__ import annotations

from mtvision.models.backbones.base import StagedBackbone, register_archs, torchvision_net

# Where torchvision's ``features`` change resolution: the stem and first block (stride 2),
# then the blocks of strides 4, 8, 16 and 32 (the last ends with the 1x1 conv to 960).
_SPLITS = {"mobilenet_v3_large": (2, 4, 7, 13)}
_CHANNELS = {"mobilenet_v3_large": (16, 24, 40, 112, 960)}


class MobileNetV3Backbone(StagedBackbone):
    """Returns ``{"c1": stride 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32}``.

    ``c5`` is the output of the final 1x1 convolution (960 channels), as in torchvision's
    detection backbones. torchvision's MobileNetV3 has no stochastic depth: ``drop_path``
    must be 0. ``pretrained``, ``frozen_stages``, ``norm_eval`` and ``checkpointing``: see
    ``base``.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 norm_eval: bool = False, drop_path: float = 0.0,
                 checkpointing: bool = False) -> None:
        net = torchvision_net(arch, pretrained, frozen_stages, drop_path, checkpointing,
                              has_drop_path=False)
        f, (a, b, c, d) = net.features, _SPLITS[arch]
        c1, *channels = _CHANNELS[arch]
        super().__init__(
            arch, f[:a], [f[a:b], f[b:c], f[c:d], f[d:]], channels, c1_channels=c1,
            frozen_stages=frozen_stages, checkpointing=checkpointing, norm_eval=norm_eval)


register_archs(MobileNetV3Backbone, _SPLITS)

__all__ = ["MobileNetV3Backbone"]
