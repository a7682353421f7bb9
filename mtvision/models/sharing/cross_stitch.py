"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

One backbone per task, run stage by stage in lockstep; after each stage a cross-stitch unit
mixes the tasks' activations channel by channel:

    x~_t[:, c] = sum_s alpha[c, t, s] * x_s[:, c]

``alpha[c]`` is a learnt T x T matrix per channel, initialised to ``alpha`` on the diagonal and
``(1 - alpha) / (T - 1)`` off it (rows sum to 1: each task starts mostly with its own
activations). The stitched stage outputs are the task's features; each task then has its own
neck and head. With ``alpha = 1`` the networks are independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mtvision.models.sharing.base import PerTaskSharing, SharingParts, task_key
from mtvision.registry import BACKBONES, SHARING, ConfigError


class CrossStitchUnit(nn.Module):
    """Per-channel T x T mixing of T tasks' activations; ``weight`` float[C, T, T] with
    ``weight[c, t, s]`` the share of task s's channel c in task t's output. ``channel_dim``:
    1 for [B, C, H, W] activations, -1 for channels-last ones ([B, H, W, C], e.g. Swin).

    With one task the unit is the identity (its 1 x 1 matrix starts at 1, not ``alpha``).
    """

    def __init__(self, channels: int, num_tasks: int, alpha: float = 0.9,
                 channel_dim: int = 1) -> None:
        super().__init__()
        T = num_tasks
        w = torch.full((T, T), (1.0 - alpha) / (T - 1) if T > 1 else 0.0)
        w.fill_diagonal_(alpha if T > 1 else 1.0)
        self.weight = nn.Parameter(w.expand(channels, T, T).clone())
        self.channel_dim = channel_dim

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """T tensors of one shape -> T mixed tensors of that shape."""
        dim = self.channel_dim + 1 if self.channel_dim >= 0 else self.channel_dim
        x = torch.stack(list(xs)).movedim(dim, -1)  # [T, ..., C]
        out = torch.einsum("cts,s...c->t...c", self.weight.to(x.dtype), x)
        return list(out.movedim(-1, dim).unbind(0))


class _Staged(NamedTuple):
    """A backbone's parts, run in lockstep with the other tasks' copies."""

    stem: nn.Module
    pool: nn.Module
    layers: list[nn.Module]
    run: Callable[[nn.Module, Tensor], Tensor]  # the backbone's own (e.g. checkpointing)
    out_norms: Sequence[nn.Module] | None
    channels_last: bool
    c1: bool  # the stem's output is a feature (and gets a unit)


def _staged(backbone: nn.Module) -> _Staged | None:
    """The parts of a backbone laid out like ``StagedBackbone`` / ``ResNetBackbone`` (a
    ``stem``, an optional ``pool``, ``layers`` giving c2, c3, ...; ``c1`` the stem's output
    when ``feature_info`` has it), or None."""
    stem, layers = getattr(backbone, "stem", None), getattr(backbone, "layers", None)
    info = getattr(backbone, "feature_info", None)
    if not isinstance(stem, nn.Module) or not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        return None
    c1 = info is not None and "c1" in info
    if info is None or len(info) - c1 != len(layers):
        return None
    pool = getattr(backbone, "pool", None)
    run = getattr(backbone, "run", None)
    return _Staged(stem, pool if pool is not None else nn.Identity(), list(layers),
                   run if run is not None else (lambda m, x: m(x)),
                   getattr(backbone, "out_norms", None),
                   bool(getattr(backbone, "channels_last_out", False)), c1)


def _supported_backbones() -> list[str]:
    """Registered backbones whose class is cut into stem and layers (for error messages)."""
    names = []
    for name in BACKBONES.names():
        cls = getattr(BACKBONES.get(name), "func", None)  # register_archs: partial(cls, arch)
        if isinstance(cls, type) and any(c.__name__ in ("StagedBackbone", "ResNetBackbone")
                                         for c in cls.__mro__):
            names.append(name)
    return names


@SHARING.register("cross_stitch")
class CrossStitch(PerTaskSharing):
    """Per-task backbones (those cut into ``stem`` + ``layers``: ``StagedBackbone``s such as
    the ResNets) joined by a ``CrossStitchUnit`` after each stage (after the stem too when its
    output is the feature ``c1``); per-task necks. Each backbone's own ``run`` (activation
    checkpointing) and output norms are kept; the units mix the activations that go on to the
    next stage.

    ``alpha``: the diagonal of the initial mixing matrices (default 0.9, 1 = independent).
    Every backbone copy and unit gets gradients from every task, so all of them are the
    shared parameters of gradient balancing (mode ``param``); there is no shared feature map
    (mode ``feature``). The units are not weight-decayed (decay would shrink the mix to 0).
    """

    name = "cross_stitch"

    def __init__(self, parts: SharingParts, alpha: float = 0.9) -> None:
        super().__init__(parts)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"model.sharing.alpha must be in [0, 1], got {alpha}")
        staged = _staged(parts.backbone)
        if staged is None:
            raise ConfigError(
                f"model.sharing 'cross_stitch' needs a backbone cut into 'stem' and 'layers' "
                f"({', '.join(_supported_backbones())}); model.backbone "
                f"'{parts.backbone_name or type(parts.backbone).__name__}' is not")
        info = parts.backbone.feature_info
        self.feature_names = list(info)
        dim = -1 if staged.channels_last else 1
        self.units = nn.ModuleList(
            CrossStitchUnit(info[n].channels, len(self.tasks), alpha, dim)
            for n in self.feature_names)

    def extract(self, backbone: nn.Module, neck: nn.Module | None, images: Tensor,
                tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        """All the tasks' stages (the units mix them), the necks of ``tasks`` only."""
        nets = [_staged(backbone[t]) for t in self.tasks]
        feats: list[dict[str, Tensor]] = [{} for _ in nets]
        xs = [n.run(n.stem, images) for n in nets]
        units = iter(self.units)
        names = iter(self.feature_names)
        if nets[0].c1:
            xs = next(units)(xs)
            name = next(names)
            for f, x in zip(feats, xs, strict=True):
                f[name] = x
        xs = [n.pool(x) for n, x in zip(nets, xs, strict=True)]
        for i, (unit, name) in enumerate(zip(units, names, strict=True)):
            xs = unit([n.run(n.layers[i], x) for n, x in zip(nets, xs, strict=True)])
            for n, f, x in zip(nets, feats, xs, strict=True):
                y = n.out_norms[i](x) if n.out_norms is not None else x
                f[name] = y.permute(0, 3, 1, 2) if n.channels_last else y
        out: dict[str, Tensor] = {}
        for t, f in zip(self.tasks, feats, strict=True):
            if tasks is not None and t not in tasks:
                continue
            if neck is not None:
                f = {**f, **neck[t](f)}
            out.update({task_key(t, n): v for n, v in f.items()})
        return out

    def shared_parameters(self, backbone: nn.Module, neck: nn.Module | None
                          ) -> list[nn.Parameter]:
        return [p for m in (backbone, self.units) for p in m.parameters() if p.requires_grad]

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters()}
