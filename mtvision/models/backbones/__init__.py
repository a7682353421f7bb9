"""Backbones: each returns a dict of named feature maps and describes them in ``feature_info``.

Registered names: resnet18/34/50/101, convnext_tiny, convnext_small, mobilenet_v3_large,
efficientnet_b0, swin_t, swin_s, vit_b_16, vit_small and timm:<model> (any timm model,
``timm_backbone``); every one gives ``c2``..``c5`` at strides 4..32 (and ``c1`` at stride 2
where the architecture has a stride-2 stem). Common
options: ``pretrained``, ``frozen_stages``, ``drop_path``, ``checkpointing`` (see ``base``).
"""

from mtvision.models.backbones import (
    convnext,
    efficientnet,
    mobilenet,
    resnet,
    swin,
    timm_backbone,
    vit,
)
from mtvision.models.backbones.base import BackboneBase, StagedBackbone
from mtvision.models.backbones.convnext import ConvNeXtBackbone
from mtvision.models.backbones.efficientnet import EfficientNetBackbone
from mtvision.models.backbones.mobilenet import MobileNetV3Backbone
from mtvision.models.backbones.resnet import ResNetBackbone
from mtvision.models.backbones.swin import SwinBackbone
from mtvision.models.backbones.timm_backbone import TimmBackbone
from mtvision.models.backbones.vit import ViTBackbone

__all__ = ["BackboneBase", "ConvNeXtBackbone", "EfficientNetBackbone", "MobileNetV3Backbone",
           "ResNetBackbone", "StagedBackbone", "SwinBackbone", "TimmBackbone", "ViTBackbone",
           "convnext", "efficientnet", "mobilenet", "resnet", "swin", "timm_backbone", "vit"]
