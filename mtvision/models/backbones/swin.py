"""torchvision Swin Transformers as multi-scale feature extractors (Liu et al., "Swin
Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021)."""

from __future__ import annotations

from torch import nn

from mtvision.models.backbones.base import (
    StagedBackbone,
    register_archs,
    torchvision_net,
)

_CHANNELS = {"swin_t": (96, 192, 384, 768), "swin_s": (96, 192, 384, 768)}


class SwinBackbone(StagedBackbone):
    """Returns ``{"c2": stride 4, "c3": 8, "c4": 16, "c5": 32}`` (no ``c1``: the patch
    embedding has stride 4).

    torchvision's stages work on NHWC tensors; each output goes through a new LayerNorm, as
    in the paper's detection backbone, and is returned as an NCHW view. Windows are padded
    inside torchvision's attention, so any input size divisible by 32 gives exact strides.
    ``drop_path``: the stochastic depth rate of the last block, linear from 0 at the first
    (torchvision's ImageNet recipes: 0.2 for T, 0.3 for S). ``pretrained``, ``frozen_stages``
    and ``checkpointing``: see ``base``.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 drop_path: float = 0.0, checkpointing: bool = False) -> None:
        net = torchvision_net(arch, pretrained, frozen_stages, drop_path, checkpointing)
        f = net.features  # patch embedding, stage 1, (patch merging, stage) x 3
        channels = _CHANNELS[arch]
        super().__init__(
            arch, f[0], [f[1], f[2:4], f[4:6], f[6:8]], channels,
            out_norms=[nn.LayerNorm(c) for c in channels], channels_last_out=True,
            frozen_stages=frozen_stages, checkpointing=checkpointing)


register_archs(SwinBackbone, _CHANNELS)

__all__ = ["SwinBackbone"]
