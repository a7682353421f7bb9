"""Plain Vision Transformers (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021)
with the simple feature pyramid of ViTDet (Li, Mao, Girshick & He, "Exploring Plain Vision
Transformer Backbones for Object Detection", ECCV 2022), so that the neck and heads get the
same c2..c5 levels as from a CNN.

The patch embedding and encoder blocks are torchvision's ``VisionTransformer``; the position
embeddings are interpolated to the input's patch grid at every forward pass.
"""

from __future__ import annotations

import functools
import math
import re

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.models.vision_transformer import EncoderBlock
from torchvision.ops import stochastic_depth

from mtvision.models.backbones.base import (
    BackboneBase,
    check_options,
    linear_drop_rates,
    register_archs,
)
from mtvision.models.backbones.weights import StateDict, load_pretrained
from mtvision.models.heads.base import FeatureInfo
from mtvision.registry import ConfigError

# torchvision's ViT-B/16, and a ViT-S/16 (the DeiT-S shape: Touvron et al., ICML 2021).
_CONFIGS = {
    "vit_b_16": {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                 "mlp_dim": 3072},
    "vit_small": {"patch_size": 16, "num_layers": 12, "num_heads": 6, "hidden_dim": 384,
                  "mlp_dim": 1536},
}
PRETRAIN_SIZE = 224  # torchvision's grid for randomly initialised ViTs (14 x 14 patches)


def interpolate_pos_embedding(pos: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """The position embeddings ``pos`` [1, num_prefix + n * n, D] of a square n x n pretraining
    grid, resampled bicubically to ``grid`` (rows, columns); the prefix (class token)
    embeddings are kept. Identity when ``grid`` is n x n."""
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    n = math.isqrt(patches.shape[1])
    if n * n != patches.shape[1]:
        raise ValueError(f"position embeddings of {patches.shape[1]} patches are not a square "
                         "grid")
    if tuple(grid) == (n, n):
        return pos
    dim = pos.shape[-1]
    patches = patches.reshape(1, n, n, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
    return torch.cat([prefix, patches], dim=1)


def encoder_block(block: EncoderBlock, x: Tensor, drop_prob: float = 0.0) -> Tensor:
    """torchvision's ``EncoderBlock.forward`` with stochastic depth on both residual branches
    (Huang et al. 2016): each image keeps a branch with probability ``1 - drop_prob``."""
    training = block.training
    y = block.ln_1(x)
    y, _ = block.self_attention(y, y, y, need_weights=False)
    x = x + stochastic_depth(block.dropout(y), drop_prob, "row", training)
    y = block.mlp(block.ln_2(x))
    return x + stochastic_depth(y, drop_prob, "row", training)


def to_torchvision_layout(state: StateDict) -> StateDict:
    """A timm / DeiT ViT state dict (``patch_embed.proj``, ``blocks.{i}.attn.qkv`` ...) renamed
    to torchvision's ``VisionTransformer`` keys; a distillation token and its position
    embedding are dropped. Other state dicts are returned unchanged."""
    if "patch_embed.proj.weight" not in state:
        return state
    top = {"patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
           "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
           "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
           "head.weight": "heads.head.weight", "head.bias": "heads.head.bias"}
    block = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.weight": "self_attention.in_proj_weight",
             "attn.qkv.bias": "self_attention.in_proj_bias",
             "attn.proj": "self_attention.out_proj", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    out: StateDict = {}
    for key, value in state.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m:
            rest = m.group(2)
            for old, new in block.items():
                if rest == old or rest.startswith(old + "."):
                    out[f"encoder.layers.encoder_layer_{m.group(1)}.{new}{rest[len(old):]}"] = \
                        value
                    break
        elif key in top:
            out[top[key]] = value
    if "dist_token" in state and "encoder.pos_embedding" in out:
        pos = out["encoder.pos_embedding"]
        out["encoder.pos_embedding"] = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
    return out


def _fit_pos_embedding(net: torchvision.models.VisionTransformer, state: StateDict
                       ) -> StateDict:
    """Convert ``state`` to torchvision's layout and give ``net`` a position-embedding table of
    the checkpoint's grid (e.g. 24 x 24 for weights trained at 384 pixels), which the forward
    pass then interpolates to each input's grid."""
    state = to_torchvision_layout(state)
    pos = state.get("encoder.pos_embedding")
    current = net.encoder.pos_embedding
    if pos is not None and pos.shape != current.shape and pos.ndim == 3 \
            and pos.shape[-1] == current.shape[-1]:
        n = math.isqrt(pos.shape[1] - 1)
        if n * n != pos.shape[1] - 1:
            raise ConfigError(f"pretrained position embeddings of {pos.shape[1] - 1} patches "
                              "are not a square grid")
        net.encoder.pos_embedding = nn.Parameter(torch.empty_like(pos))
    return state


class PatchEmbed(nn.Module):
    """Patchify convolution, class token and position embeddings (interpolated to the input's
    patch grid); returns tokens [B, 1 + H/p * W/p, D]."""

    def __init__(self, conv_proj: nn.Conv2d, class_token: nn.Parameter,
                 pos_embedding: nn.Parameter) -> None:
        super().__init__()
        self.conv_proj = conv_proj
        self.class_token = class_token
        self.pos_embedding = pos_embedding
        self.patch_size = int(conv_proj.stride[0])

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"ViT input size {h}x{w} is not divisible by the patch size {p}")
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.class_token.expand(x.shape[0], -1, -1)
        pos = interpolate_pos_embedding(self.pos_embedding, (h // p, w // p))
        return torch.cat([cls, x], dim=1) + pos


def _conv_ln(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                      bias=False), LayerNorm2d(out_channels, eps=1e-6)]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid from one stride-16 map with ``dim`` channels: stride 4
    by two 2x transposed convolutions (LayerNorm and GELU between), 8 by one, 16 as is, 32 by
    2x2 max-pooling; each then a 1x1 and a 3x3 convolution to ``out_channels``, each followed
    by a channel LayerNorm (Li et al. 2022, Fig. 1c)."""

    def __init__(self, dim: int, out_channels: int = 256) -> None:
        super().__init__()
        half, quarter = dim // 2, dim // 4
        scales: dict[str, tuple[list[nn.Module], int]] = {
            "c2": ([nn.ConvTranspose2d(dim, half, 2, stride=2), LayerNorm2d(half, eps=1e-6),
                    nn.GELU(), nn.ConvTranspose2d(half, quarter, 2, stride=2)], quarter),
            "c3": ([nn.ConvTranspose2d(dim, half, 2, stride=2)], half),
            "c4": ([], dim),
            "c5": ([nn.MaxPool2d(2, stride=2)], dim),
        }
        self.levels = nn.ModuleDict({
            name: nn.Sequential(*layers, *_conv_ln(ch, out_channels, 1),
                                *_conv_ln(out_channels, out_channels, 3))
            for name, (layers, ch) in scales.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: level(x) for name, level in self.levels.items()}


class ViTBackbone(BackboneBase):
    """Returns ``{"c2": stride 4, "c3": 8, "c4": 16, "c5": 32}``, each with ``out_channels``,
    from the last encoder block through a ``SimpleFeaturePyramid``.

    Inputs must have sides divisible by the patch size (16; by 32 for exact ``c5`` strides);
    the class token is dropped from the output. ``pretrained``: a torchvision weights name
    for ``vit_b_16`` (``IMAGENET1K_V1``, ``IMAGENET1K_SWAG_E2E_V1`` at 384 pixels,
    ``IMAGENET1K_SWAG_LINEAR_V1``), or a local file of torchvision's or timm's/DeiT's ViT
    layout; torchvision ships no weights for ``vit_small``, so only files apply there. The
    pretraining grid is the file's. ``frozen_stages``: 1 freezes the patch embedding, each
    further stage a quarter of the blocks (5: the whole encoder; the pyramid always trains).
    ``drop_path``: stochastic depth of the last block, linear from 0 at the first.
    ``checkpointing``: per encoder block.
    """

    def __init__(self, arch: str, pretrained: str | None = None, frozen_stages: int = 0,
                 drop_path: float = 0.0, checkpointing: bool = False,
                 out_channels: int = 256) -> None:
        check_options(arch, frozen_stages, drop_path, checkpointing)
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) \
                or out_channels < 1:
            raise ConfigError(f"backbone {arch}: out_channels must be a positive integer, "
                              f"got {out_channels!r}")
        super().__init__(arch, frozen_stages, checkpointing)
        cfg = _CONFIGS[arch]
        net = torchvision.models.VisionTransformer(image_size=PRETRAIN_SIZE, **cfg)
        if pretrained:
            load_pretrained(net, arch, pretrained, functools.partial(_fit_pos_embedding, net))
        self.embed = PatchEmbed(net.conv_proj, net.class_token, net.encoder.pos_embedding)
        self.blocks = nn.ModuleList(net.encoder.layers)
        self.norm = net.encoder.ln
        self.drop_rates = linear_drop_rates(drop_path, len(self.blocks))
        self.pyramid = SimpleFeaturePyramid(cfg["hidden_dim"], out_channels)
        self.feature_info = {f"c{i}": FeatureInfo(out_channels, 2 ** i) for i in range(2, 6)}
        self._freeze()

    def stages(self) -> list[nn.Module]:
        depth = len(self.blocks)
        cuts = [round(depth * k / 4) for k in range(5)]
        groups: list[nn.Module] = [nn.ModuleList(self.blocks[a:b])
                                   for a, b in zip(cuts, cuts[1:], strict=False)]
        groups[-1] = nn.ModuleList([*groups[-1], self.norm])
        return [self.embed, *groups]

    def no_weight_decay(self) -> set[str]:
        """Parameter names an optimizer should not decay (the class token and positions)."""
        return {"embed.class_token", "embed.pos_embedding"}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        rows, cols = x.shape[-2] // self.embed.patch_size, x.shape[-1] // self.embed.patch_size
        tokens = self.embed(x)
        for block, rate in zip(self.blocks, self.drop_rates, strict=True):
            tokens = self.run(block, tokens, functools.partial(encoder_block, block,
                                                               drop_prob=rate))
        tokens = self.norm(tokens)[:, 1:]  # without the class token
        feat = tokens.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)
        return self.pyramid(feat)


register_archs(ViTBackbone, _CONFIGS)

__all__ = ["PatchEmbed", "SimpleFeaturePyramid", "ViTBackbone", "encoder_block",
           "interpolate_pos_embedding", "to_torchvision_layout"]
