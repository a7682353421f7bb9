"""torchvision ConvNeXts as multi-scale feature extractors (Liu et al., "A ConvNet for the
2020s", CVPR 2022)."""

from __future__ import annotations

from torchvision.models.convnext import LayerNorm2d

from mtvision.models.backbones.base import (
    StagedBackbone,
    register_archs,
    torchvision_net,
)

_CHANNELS = {"convnext_tiny": (96, 192, 384, 768), "convnext_small": (96, 192, 384, 768)}


class ConvNeXtBackbone(StagedBackbone):
    """Returns ``{"c2": stride 4, "c3": 8, "c4": 16, "c5": 32}``; the stem is a stride-4
    patchify convolution, so there is no ``c1``.

    As in the paper's detection and segmentation backbones, every output goes through a new
    channel LayerNorm (torchvision's stages leave them un-normalised; each downsampling
    layer normalises its own input). ``drop_path`` is the stochastic depth rate of the last
    block, growing linearly from 0 at the first (torchvision's ImageNet recipes: 0.1 for T,
    0.4 for S). ``pretrained``, ``frozen_stages`` and ``checkpointing``: see ``base``.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 drop_path: float = 0.0, checkpointing: bool = False) -> None:
        net = torchvision_net(arch, pretrained, frozen_stages, drop_path, checkpointing)
        f = net.features  # stem, stage 1, (downsample, stage) x 3
        channels = _CHANNELS[arch]
        super().__init__(
            arch, f[0], [f[1], f[2:4], f[4:6], f[6:8]], channels,
            out_norms=[LayerNorm2d(c, eps=1e-6) for c in channels],
            frozen_stages=frozen_stages, checkpointing=checkpointing)


register_archs(ConvNeXtBackbone, _CHANNELS)

__all__ = ["ConvNeXtBackbone"]
