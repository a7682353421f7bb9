"""Models: backbones, necks, task heads and the multi-task model that joins them."""

from mtvision.models import backbones, heads, necks  # noqa: F401 - registers the parts
from mtvision.models.multitask import MultiTaskModel, build_model

__all__ = ["MultiTaskModel", "build_model"]
