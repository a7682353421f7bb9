"""Backbones: each returns a dict of named feature maps and describes them in ``feature_info``."""

from mtvision.models.backbones import resnet
from mtvision.models.backbones.resnet import ResNetBackbone

__all__ = ["ResNetBackbone", "resnet"]
