"""What every backbone shares: option checks, frozen stages, stochastic depth and activation
checkpointing (Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016).

A backbone is a stem followed by four stages. The options of every builder:

- ``pretrained``: a torchvision weights name (downloaded when online) or a local state-dict
  file (``weights.load_pretrained``); None trains from scratch.
- ``frozen_stages``: 0..5 counted from the stem (1 = the stem, 2..5 = the stem and the first
  1..4 stages, like mmdetection's ResNets); frozen parts get no gradient and stay in eval mode.
- ``drop_path``: the stochastic depth rate of the last block, linear from 0 at the first;
  a ConfigError above 0 where the architecture has no residual branch to drop.
- ``checkpointing``: recompute each stage's (ViT: each block's) activations in backward
  instead of storing them; only while training with gradients enabled.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from mtvision.models.backbones.weights import load_pretrained
from mtvision.models.heads.base import FeatureInfo
from mtvision.registry import BACKBONES, ConfigError

NUM_STAGES = 5  # the stem and four stages
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_options(arch: str, frozen_stages: Any, drop_path: Any, checkpointing: Any,
                  has_drop_path: bool = True) -> None:
    """Raise ConfigError for an option value ``arch`` cannot take."""
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
            or not 0 <= frozen_stages <= NUM_STAGES:
        raise ConfigError(f"backbone {arch}: frozen_stages must be an integer in 0..{NUM_STAGES} "
                          f"(0 = none, 1 = the stem, 5 = everything), got {frozen_stages!r}")
    if isinstance(drop_path, bool) or not isinstance(drop_path, int | float) \
            or not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"backbone {arch}: drop_path must be a number in [0, 1), "
                          f"got {drop_path!r}")
    if drop_path > 0 and not has_drop_path:
        raise ConfigError(f"backbone {arch}: the architecture has no stochastic depth; "
                          f"set drop_path to 0 (got {drop_path})")
    if not isinstance(checkpointing, bool):
        raise ConfigError(f"backbone {arch}: checkpointing must be true or false, "
                          f"got {checkpointing!r}")


def torchvision_net(arch: str, pretrained: str | None, frozen_stages: Any, drop_path: Any,
                    checkpointing: Any, has_drop_path: bool = True) -> nn.Module:
    """The torchvision network ``arch`` with the options checked, ``pretrained`` loaded and
    (where it has stochastic depth) the drop-path rates set."""
    check_options(arch, frozen_stages, drop_path, checkpointing, has_drop_path)
    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        load_pretrained(net, arch, pretrained)
    if has_drop_path:
        set_drop_path(net, drop_path)
    return net


def register_archs(cls: type[nn.Module], archs: Iterable[str]) -> None:
    """Register ``cls(arch, **options)`` under each name in ``archs``; the options a config
    may set are the keyword arguments of ``cls.__init__`` after ``arch``."""
    for arch in archs:
        BACKBONES.register(arch)(functools.partial(cls, arch))


def linear_drop_rates(rate: float, depth: int) -> list[float]:
    """Per-block stochastic depth rates growing linearly from 0 to ``rate`` (Huang et al.,
    "Deep Networks with Stochastic Depth", ECCV 2016; the rule of ConvNeXt and Swin)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def set_drop_path(net: nn.Module, rate: float) -> None:
    """Set the rates of ``net``'s torchvision ``StochasticDepth`` modules, in block order, to
    ``linear_drop_rates(rate, n)``."""
    layers = [m for m in net.modules() if isinstance(m, StochasticDepth)]
    for m, p in zip(layers, linear_drop_rates(rate, len(layers)), strict=True):
        m.p = p


@contextmanager
def _keep_batch_norm_stats(module: nn.Module) -> Iterator[None]:
    """Undo the running-statistics update of the BatchNorms in ``module`` on exit: the
    checkpointed forward pass is recomputed in backward, where it must not count twice."""
    bns = [m for m in module.modules()
           if isinstance(m, _BATCH_NORMS) and m.training and m.running_mean is not None]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
             for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(bns, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def run_checkpointed(module: nn.Module, x: Tensor,
                     fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``fn(x)`` (default ``module(x)``) under non-reentrant activation checkpointing: its
    activations are recomputed in backward instead of stored. ``module`` owns the parameters
    and BatchNorm statistics ``fn`` uses; the random state is replayed, so dropout and
    stochastic depth draw the same masks twice."""
    return checkpoint(fn or module, x, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), _keep_batch_norm_stats(module)))


class BackboneBase(nn.Module, ABC):
    """Frozen stages, ``norm_eval`` and checkpointing for a backbone whose ``stages()`` are its
    stem and four stages. Subclasses build their modules, then call ``_freeze()``.

    ``feature_info`` maps each output name (``c2``..``c5``, and ``c1`` at stride 2 where the
    architecture has one) to its ``FeatureInfo(channels, stride)``.
    """

    feature_info: dict[str, FeatureInfo]

    def __init__(self, arch: str, frozen_stages: int = 0, checkpointing: bool = False,
                 norm_eval: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.frozen_stages = frozen_stages
        self.checkpointing = checkpointing
        self.norm_eval = norm_eval

    @abstractmethod
    def stages(self) -> list[nn.Module]:
        """The stem and the four stages, in order."""

    def _freeze(self) -> None:
        for m in self.stages()[: self.frozen_stages]:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> BackboneBase:
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            # Small fine-tuning batches give noisy statistics; keep the pretrained ones.
            for m in self.modules():
                if isinstance(m, _BATCH_NORMS):
                    m.eval()
        return self

    def run(self, module: nn.Module, x: Tensor,
            fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``fn(x)`` (default ``module(x)``), checkpointed when ``checkpointing`` is on, the
        model trains with gradients enabled, and something in it needs a gradient."""
        if (self.checkpointing and self.training and torch.is_grad_enabled()
                and (x.requires_grad or any(p.requires_grad for p in module.parameters()))):
            return run_checkpointed(module, x, fn)
        return fn(x) if fn is not None else module(x)


class StagedBackbone(BackboneBase):
    """A torchvision feature extractor cut into ``stem`` and four ``layers``.

    The stem's output is ``c1`` when ``c1_channels`` is given (a stride-2 stem), ``pool`` runs
    between stem and ``layers`` (ResNet's max-pool), ``layers[i]`` gives ``c{i+2}`` at stride
    ``2 ** (i + 2)``, optionally through ``out_norms[i]``; ``channels_last_out`` marks NHWC
    stages (Swin), whose outputs are permuted to NCHW.
    """

    def __init__(self, arch: str, stem: nn.Module, layers: Sequence[nn.Module],
                 channels: Sequence[int], *, c1_channels: int | None = None,
                 pool: nn.Module | None = None, out_norms: Sequence[nn.Module] | None = None,
                 channels_last_out: bool = False, frozen_stages: int = 0,
                 checkpointing: bool = False, norm_eval: bool = False) -> None:
        super().__init__(arch, frozen_stages, checkpointing, norm_eval)
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"{arch}: a staged backbone needs 4 layers and 4 channel counts")
        self.stem = stem
        self.pool = pool if pool is not None else nn.Identity()
        self.layers = nn.ModuleList(layers)
        self.out_norms = nn.ModuleList(out_norms) if out_norms is not None else None
        self.channels_last_out = channels_last_out
        self.feature_info = {"c1": FeatureInfo(c1_channels, 2)} if c1_channels else {}
        self.feature_info.update(
            {f"c{i + 2}": FeatureInfo(c, 2 ** (i + 2)) for i, c in enumerate(channels)})
        self._freeze()

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.run(self.stem, x)
        out = {"c1": x} if "c1" in self.feature_info else {}
        x = self.pool(x)
        for i, layer in enumerate(self.layers):
            x = self.run(layer, x)
            y = self.out_norms[i](x) if self.out_norms is not None else x
            out[f"c{i + 2}"] = y.permute(0, 3, 1, 2) if self.channels_last_out else y
        return out
