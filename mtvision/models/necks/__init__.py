"""Necks: turn backbone features into the multi-scale features the heads share."""

from mtvision.models.necks.fpn import FPN

__all__ = ["FPN"]
