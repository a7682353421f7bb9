"""torchvision EfficientNet-B0 as a multi-scale feature extractor (Tan & Le, "EfficientNet:
Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019)."""

from __future__ import annotations

from mtvision.models.backbones.base import (
    StagedBackbone,
    register_archs,
    torchvision_net,
)

# Where torchvision's ``features`` change resolution: the stem and first MBConv stage
# (stride 2), then strides 4, 8, 16 and 32 (the last ends with the 1x1 conv to 1280).
_SPLITS = {"efficientnet_b0": (2, 3, 4, 6)}
_CHANNELS = {"efficientnet_b0": (16, 24, 40, 112, 1280)}


class EfficientNetBackbone(StagedBackbone):
    """Returns ``{"c1": stride 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32}``.

    ``c5`` is the output of the final 1x1 convolution (1280 channels). ``drop_path``: the
    stochastic depth rate of the MBConv blocks' residuals, linear from 0 at the first block
    to exactly ``drop_path`` at the last (torchvision trains with 0.2 and stops one step
    short of it, at 0.2 * (n - 1) / n). ``pretrained``, ``frozen_stages``, ``norm_eval`` and
    ``checkpointing``: see ``base``.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 norm_eval: bool = False, drop_path: float = 0.0,
                 checkpointing: bool = False) -> None:
        net = torchvision_net(arch, pretrained, frozen_stages, drop_path, checkpointing)
        f, (a, b, c, d) = net.features, _SPLITS[arch]
        c1, *channels = _CHANNELS[arch]
        super().__init__(
            arch, f[:a], [f[a:b], f[b:c], f[c:d], f[d:]], channels, c1_channels=c1,
            frozen_stages=frozen_stages, checkpointing=checkpointing, norm_eval=norm_eval)


register_archs(EfficientNetBackbone, _SPLITS)

__all__ = ["EfficientNetBackbone"]
