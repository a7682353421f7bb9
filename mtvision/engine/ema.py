"""Model EMA (``train.ema``): an exponential moving average of the weights, evaluated and
exported in place of the raw weights when present.

After optimizer step t (counted from 1) every floating-point entry of the model's state dict
(parameters and float buffers such as BatchNorm statistics) moves towards the model's::

    d_t   = decay * (1 - exp(-t / warmup))        (warmup 0: d_t = decay)
    ema_t = d_t * ema_{t-1} + (1 - d_t) * theta_t

the warm-up ramp of YOLOv5/Ultralytics (Polyak & Juditsky, 1992, for the averaging): early
weights, far from the solution, are forgotten quickly. Integer buffers (BatchNorm's batch count)
are copied. One fused ``_foreach_lerp_`` per step: no host sync, a handful of launches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class ModelEMA:
    """The EMA of ``model``'s state dict; ``state_dict()``/``load_state_dict()`` for
    checkpoints, ``weights()`` for evaluation and export."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: int = 2000) -> None:
        if not 0.0 < decay < 1.0 or warmup < 0:
            raise ValueError(f"train.ema needs 0 < decay < 1 and warmup >= 0, got decay "
                             f"{decay}, warmup {warmup}")
        self.decay, self.warmup = float(decay), int(warmup)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone()
                                          for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """d_t of the module docstring for step ``step`` (>= 1)."""
        if self.warmup == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-step / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in ``model``'s current weights (call after each optimizer step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([self.shadow[k] for k in floats],
                                 [current[k].detach() for k in floats], 1.0 - d)
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def weights(self) -> dict[str, Tensor]:
        """The averaged state dict (the tensors themselves: copy before changing them)."""
        return self.shadow

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.shadow, "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["weights"])
        if missing:
            raise KeyError(f"EMA weights do not fit the model: {sorted(missing)[:3]}")
        for k, v in state["weights"].items():
            self.shadow[k].copy_(v)
        self.updates = int(state["updates"])


def build_ema(model: nn.Module, cfg: dict[str, Any] | None) -> ModelEMA | None:
    """The EMA of ``train.ema`` (None when the section is absent or null: off)."""
    if not cfg:
        return None
    return ModelEMA(model, cfg.get("decay", 0.9998), cfg.get("warmup", 2000))


@contextmanager
def swapped_weights(model: nn.Module, weights: dict[str, Tensor] | None) -> Iterator[None]:
    """``model`` with ``weights`` loaded inside the block, its own weights again after it
    (nothing happens for None)."""
    if weights is None:
        yield
        return
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield
    finally:
        model.load_state_dict(own)
