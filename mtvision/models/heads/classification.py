"""Image classification: global average pooling of the chosen levels, concatenated, then a
linear classifier (optionally one hidden ReLU layer), as in ResNet (He et al., CVPR 2016).

Single-label: softmax cross-entropy. Multi-label: one sigmoid / binary cross-entropy per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.models.heads.base import FeatureInfo, TaskHead, check_in_features, select_features
from mtvision.registry import HEADS, ConfigError


@HEADS.register("linear")
class LinearClsHead(TaskHead):
    """Pooled-feature classifier.

    ``forward`` returns logits float[B, num_classes]. Loss component: ``ce`` (single-label,
    targets long[B], -1 = no label) or ``bce`` (multi-label, targets float[B, C] multi-hot).
    """

    task = "cls"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        num_classes: int,
        in_features: Sequence[str] = ("c5",),
        dropout: float = 0.0,
        multi_label: bool = False,
        hidden: int = 0,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        check_in_features(feature_info, self.in_features, "linear")
        if num_classes < 1:
            raise ConfigError(f"head 'linear': num_classes must be >= 1, got {num_classes}")
        if not self.in_features:
            raise ConfigError("head 'linear': in_features is empty")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head 'linear': dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.multi_label = bool(multi_label)
        in_ch = sum(feature_info[n].channels for n in self.in_features)
        layers: list[nn.Module] = []
        if hidden > 0:
            layers += [nn.Dropout(dropout), nn.Linear(in_ch, hidden), nn.ReLU(inplace=True)]
            in_ch = hidden
        layers += [nn.Dropout(dropout), nn.Linear(in_ch, num_classes)]
        self.classifier = nn.Sequential(*layers)

    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """Logits float[B, num_classes]."""
        pooled = [x.mean(dim=(2, 3)) for x in select_features(features, self.in_features)]
        return self.classifier(torch.cat(pooled, dim=1))

    def loss(self, outputs: Tensor, targets: Tensor, present: Tensor) -> dict[str, Tensor]:
        """Mean softmax CE (``ce``) or mean per-class BCE (``bce``) over present images."""
        # nonzero() of the host flags (no device sync), the index copied asynchronously.
        sel = torch.as_tensor(present).reshape(-1).nonzero().reshape(-1)
        sel = sel.to(outputs.device, non_blocking=True)
        logits = outputs[sel].float()
        target = targets.to(outputs.device)[sel]
        if self.multi_label:
            if target.dim() != 2:
                raise ValueError(
                    f"head 'linear' (multi_label) expects float[B, C] targets, "
                    f"got shape {tuple(targets.shape)}"
                )
            total = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum")
            return {"bce": total / max(target.numel(), 1)}
        if target.dim() != 1:
            raise ValueError(
                f"head 'linear' expects long[B] targets (multi-hot targets need "
                f"multi_label: true), got shape {tuple(targets.shape)}"
            )
        target = target.long()
        total = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum")
        # Normalise by the labelled images ourselves: reduction="mean" gives NaN when none is.
        return {"ce": total / (target >= 0).sum().clamp_min(1)}

    @torch.no_grad()
    def postprocess(self, outputs: Tensor, image_size: tuple[int, int]) -> list[dict[str, Any]]:
        """Per image ``{"label", "score", "probs"}`` (+ ``"labels"`` with prob >= 0.5 when
        multi-label)."""
        logits = outputs.float()
        probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=1)
        results = []
        for p in probs:
            label = int(p.argmax())
            item: dict[str, Any] = {"label": label, "score": float(p[label]), "probs": p}
            if self.multi_label:
                item["labels"] = [int(i) for i in (p >= 0.5).nonzero().reshape(-1)]
            results.append(item)
        return results
