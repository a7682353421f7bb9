"""The optimizer and the learning-rate schedule of ``train.optimizer`` / ``train.scheduler``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on norms, biases and the parameters the model's
    ``no_weight_decay()`` names (e.g. cross-stitch units); ``backbone_lr_mult`` for the
    backbone (every copy of it with per-task backbones)."""
    no_wd: set[str] = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone."), p.ndim <= 1 or name in no_wd)
        groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": ps, "lr": cfg["lr"] * (cfg["backbone_lr_mult"] if bb else 1.0),
         "weight_decay": 0.0 if no_decay else cfg["weight_decay"]}
        for (bb, no_decay), ps in sorted(groups.items())
    ]
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg["lr"], betas=tuple(cfg["betas"]))
    return torch.optim.SGD(param_groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True)


def lr_factor(it: int, total: int, cfg: dict[str, Any]) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then cosine decay to ``min_lr_ratio``."""
    warm = min(cfg["warmup_iters"], max(total - 1, 0))
    if it < warm:
        a = it / max(warm, 1)
        return cfg["warmup_factor"] * (1 - a) + a
    if cfg["name"] == "constant":
        return 1.0
    progress = (it - warm) / max(total - warm, 1)
    m = cfg["min_lr_ratio"]
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
