"""Loading pretrained backbone weights from a torchvision weights name or a local file."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from mtvision.registry import ConfigError


def load_pretrained(net: nn.Module, arch: str, pretrained: str) -> None:
    """Load ``pretrained`` (a local state-dict file or a torchvision weights name) into ``net``.

    A name needs the network or torch's hub cache; offline without a cache the error says how
    to pass a file instead.
    """
    path = Path(pretrained).expanduser()
    if path.suffix in {".pth", ".pt", ".bin"} or path.exists():
        if not path.is_file():
            raise ConfigError(f"pretrained weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
            raise ConfigError(f"cannot read pretrained weights {path}: {e}") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        missing, unexpected = net.load_state_dict(state, strict=False)
        loaded = len(net.state_dict()) - len(missing)
        if loaded == 0:
            raise ConfigError(f"pretrained weights {path} match no parameter of {arch}")
        return
    try:
        weights = torchvision.models.get_model_weights(arch)[pretrained]
    except (KeyError, ValueError):
        names = [w.name for w in torchvision.models.get_model_weights(arch)]
        raise ConfigError(
            f"unknown pretrained weights '{pretrained}' for {arch}; use one of {names} "
            "or the path of a local .pth file"
        ) from None
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - offline, proxy, corrupt cache...
        raise ConfigError(
            f"cannot download {arch} weights '{pretrained}' ({type(e).__name__}); offline, "
            f"download {weights.url} elsewhere and set model.backbone.pretrained to the file path"
        ) from None
    net.load_state_dict(state)
