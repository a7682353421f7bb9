"""Hard parameter sharing (Caruana 1997): one backbone and neck feed every task head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtvision.models.sharing.base import Sharing, SharingParts
from mtvision.registry import SHARING


@SHARING.register("hard")
class HardSharing(Sharing):
    """The default: every head reads the same features ``neck(backbone(x))``; the backbone and
    neck parameters are shared by all tasks. Has no parameters of its own."""

    name = "hard"

    def __init__(self, parts: SharingParts) -> None:
        super().__init__(parts)
        # The heads' inputs, fixed at build time (feature_info of the shared encoder).
        everything = list(parts.backbone.feature_info) + (
            list(parts.neck.feature_info) if parts.neck is not None else [])
        self._head_inputs: list[str] = []
        for head in parts.heads.values():
            for n in getattr(head, "in_features", everything):
                if n not in self._head_inputs:
                    self._head_inputs.append(n)

    def extract(self, backbone: nn.Module, neck: nn.Module | None, images: Tensor,
                tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        feats = backbone(images)
        if neck is not None:
            feats = {**feats, **neck(feats)}
        return feats

    def task_features(self, features: dict[str, Tensor], task: str) -> dict[str, Tensor]:
        return features

    def shared_parameters(self, backbone: nn.Module, neck: nn.Module | None
                          ) -> list[nn.Parameter]:
        mods = [backbone] + ([neck] if neck is not None else [])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def head_inputs(self, backbone: nn.Module, neck: nn.Module | None) -> list[str]:
        """Every feature some head reads (its ``in_features``; all when a head does not say),
        in a fixed order."""
        return list(self._head_inputs)
