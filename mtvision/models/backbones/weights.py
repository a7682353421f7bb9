"""Loading pretrained backbone weights from a torchvision weights name or a local file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from mtvision.registry import ConfigError

StateDict = dict[str, Tensor]


WEIGHT_SUFFIXES = {".pth", ".pt", ".bin", ".safetensors"}


def read_state_dict(path: Path, arch: str) -> StateDict:
    """The state dict in ``path`` (a ``torch.save`` file, read with ``weights_only``, or
    ``.safetensors``), unwrapped from a ``model``/``state_dict`` key; ConfigError if unusable."""
    if not path.is_file():
        raise ConfigError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # comes with timm, whose files use it

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ConfigError(f"{path}: reading .safetensors needs the safetensors package") from None
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ConfigError(f"cannot read pretrained weights {path}: {e}") from None
    for key in ("model", "state_dict"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained weights {path} hold no state dict for {arch}")
    return state


def _download(arch: str, pretrained: str) -> StateDict:
    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        raise ConfigError(
            f"torchvision ships no pretrained weights for {arch}; set pretrained to the path "
            "of a local .pth file") from None
    try:
        weights = enum[pretrained]
    except KeyError:
        raise ConfigError(
            f"unknown pretrained weights '{pretrained}' for {arch}; use one of "
            f"{[w.name for w in enum]} or the path of a local .pth file") from None
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - offline, proxy, corrupt cache...
        raise ConfigError(
            f"cannot download {arch} weights '{pretrained}' ({type(e).__name__}); offline, "
            f"download {weights.url} elsewhere and set model.backbone.pretrained to the file path"
        ) from None


def load_pretrained(net: nn.Module, arch: str, pretrained: str,
                    prepare: Callable[[StateDict], StateDict] | None = None) -> None:
    """Load ``pretrained`` (a local state-dict file or a torchvision weights name) into the
    torchvision model ``net``.

    A name needs the network or torch's hub cache; offline without a cache the error says how
    to pass a file instead. A file may hold a subset of ``net``'s weights (at least one), plain
    or under a ``model``/``state_dict`` key. ``prepare`` may convert the state dict (or adapt
    ``net`` to it) before loading.
    """
    path = Path(pretrained).expanduser()
    is_file = path.suffix in WEIGHT_SUFFIXES or path.exists()
    state = read_state_dict(path, arch) if is_file else _download(arch, pretrained)
    if prepare is not None:
        state = prepare(state)
    source = str(path) if is_file else f"'{pretrained}'"
    try:
        missing, _ = net.load_state_dict(state, strict=not is_file)
    except RuntimeError as e:  # mismatched shapes (or keys, for torchvision's own weights)
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ConfigError(f"pretrained weights {source} do not fit {arch}: {detail}") from None
    if len(net.state_dict()) == len(missing):
        raise ConfigError(f"pretrained weights {source} match no parameter of {arch}")
