"""Any timm model as a backbone: ``model.backbone.name: timm:<model>`` (timm >= 1.0, the
``timm`` extra: ``pip install 'mtvision[timm]'``).

The model is built with ``features_only=True`` and its ``feature_info`` strides are mapped onto
the levels every neck and head here expects: stride 2 -> ``c1``, 4 -> ``c2`` ... 32 -> ``c5``
(the last map of each stride). Single-scale models (ViT, DeiT, EVA, DINOv2: every map at the
patch stride) go through the simple feature pyramid of ``vit.ViTBackbone``, fed by the last
block; a patch stride other than 16 (DINOv2's 14) is resampled to the stride-16 grid first.
ViT-style models are built with ``dynamic_img_size`` (position embeddings interpolated to each
input, as ``vit.ViTBackbone`` does) and ``dynamic_img_pad`` where timm offers them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvision.models.backbones.base import BackboneBase, check_options
from mtvision.models.backbones.vit import SimpleFeaturePyramid
from mtvision.models.backbones.weights import read_state_dict
from mtvision.models.heads.base import FeatureInfo
from mtvision.registry import BACKBONES, ConfigError, closest

PREFIX = "timm"
PYRAMID_STRIDE = 16  # the stride SimpleFeaturePyramid expects (ViTDet's)
# Keyword arguments that let ViT-style models take any input size; dropped, one by one, for
# models whose constructor does not know them.
_DYNAMIC_SIZE = {"dynamic_img_size": True, "dynamic_img_pad": True}


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("timm backbones need timm: pip install 'mtvision[timm]' (or "
                          "pip install timm)") from None
    return timm


def check_model_name(model: str) -> None:
    """ConfigError unless ``model`` names a timm architecture (a pretrained tag is allowed)."""
    timm = _timm()
    if not model:
        raise ConfigError("a timm backbone needs a model name: timm:<model>, e.g. "
                          "timm:convnext_tiny")
    if not timm.is_model(model):
        hint = closest(f"{PREFIX}:{model}", [f"{PREFIX}:{n}" for n in timm.list_models()])
        raise ConfigError(f"unknown timm model '{model}'{hint}; timm.list_models() lists them")


def _unexpected_argument(error: TypeError, names: Any) -> str | None:
    """The one of ``names`` that ``error`` ("got an unexpected keyword argument 'x'") names."""
    return next((n for n in names if f"'{n}'" in str(error)), None)


def _create(model: str, state: dict[str, Tensor] | None, pretrained: str | None,
            drop_path: float, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(model, features_only=True, ...)`` with the options, the pretrained
    file's state dict (loaded by timm before it cuts the model, so its own key remapping and
    position-embedding resampling apply) and the dynamic-size arguments where accepted."""
    timm = _timm()
    args: dict[str, Any] = {**kwargs, "features_only": True}
    if drop_path > 0:
        args["drop_path_rate"] = drop_path
    if state is not None:
        # 'source' cleared: timm would otherwise prefer the hub over the given weights.
        args.update(pretrained=True,
                    pretrained_cfg_overlay={"state_dict": state, "source": "", "file": None})
    optional = {k: v for k, v in _DYNAMIC_SIZE.items() if k not in args}
    while True:
        try:
            return timm.create_model(model, **args, **optional)
        except TypeError as e:
            name = _unexpected_argument(e, optional)
            if name is not None:
                del optional[name]
                continue
            if _unexpected_argument(e, ["drop_path_rate"]):
                raise ConfigError(f"backbone timm:{model}: the model has no stochastic depth "
                                  f"(drop_path_rate); set drop_path to 0") from None
            raise ConfigError(f"backbone timm:{model}: cannot build it with kwargs {kwargs}: "
                              f"{e}") from None
        except (RuntimeError, KeyError, ValueError) as e:
            if state is None:
                raise
            # The state dict does not fit: shapes (load_state_dict), or keys that the model's
            # own checkpoint filter expects (KeyError).
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [repr(e)]
            detail = (f"its checkpoint filter expects the key {e.args[0]!r}"
                      if isinstance(e, KeyError) else lines[1] if len(lines) > 1 else lines[0])
            raise ConfigError(f"pretrained weights {pretrained} do not fit timm:{model}: "
                              f"{detail}") from None


def _check_loaded(net: nn.Module, state: dict[str, Tensor], pretrained: str,
                  model: str) -> None:
    """ConfigError when no tensor of the file ended up in ``net`` (timm loads non-strictly
    once it dropped the classifier, so a file of another model would pass silently)."""
    by_shape: dict[tuple[int, ...], list[Tensor]] = {}
    for t in state.values():
        if isinstance(t, Tensor) and t.ndim >= 1:
            by_shape.setdefault(tuple(t.shape), []).append(t)
    for p in net.state_dict().values():
        if any(torch.equal(p, t) for t in by_shape.get(tuple(p.shape), [])):
            return
    raise ConfigError(f"pretrained weights {pretrained} match no parameter of timm:{model}")


def _units(root: nn.Module, targets: set[str]) -> list[tuple[str, nn.Module]]:
    """``root``'s modules in registration order, opened down to the modules named in
    ``targets`` (dotted names relative to ``root``), so that each target is one unit."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in root.named_children():
        inner = {t[len(name) + 1:] for t in targets if t.startswith(name + ".")}
        if inner and name not in targets:
            out += [(f"{name}.{n}", m) for n, m in _units(child, inner)]
        else:
            out.append((name, child))
    return out


class TimmBackbone(BackboneBase):
    """A timm model cut to ``c2``..``c5`` (and ``c1`` where it has a stride-2 map).

    ``pretrained``: a local weights file of the timm model (``.safetensors``, ``.pth``,
    ``.bin``; its classifier is dropped). ``frozen_stages``: 1 freezes the stem (everything up
    to the stride-2 map, or before the stride-4 stage), 2..5 also the stages of ``c2``..``c5``;
    for ViT-style models 1 is the patch embedding (with class token and positions) and each
    further stage a quarter of the blocks, as in ``vit.ViTBackbone``. ``drop_path``: timm's
    ``drop_path_rate``. ``checkpointing``: per stage module with BatchNorm statistics kept
    (``base.run_checkpointed``) for the usual timm wrapper, else timm's own
    ``set_grad_checkpointing`` (where a recomputed BatchNorm counts its batch twice).
    ``out_channels``: the pyramid's width (single-scale models only; default 256).
    ``kwargs``: further arguments of ``timm.create_model`` (e.g. ``{depth: 6}``).
    """

    def __init__(self, model: str, pretrained: str | None = None, frozen_stages: int = 0,
                 drop_path: float = 0.0, checkpointing: bool = False,
                 out_channels: int | None = None, kwargs: dict[str, Any] | None = None) -> None:
        arch = f"{PREFIX}:{model}"
        check_options(arch, frozen_stages, drop_path, checkpointing)
        check_model_name(model)
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(f"backbone {arch}: kwargs must be a mapping of timm.create_model "
                              f"arguments, got {kwargs!r}")
        super().__init__(arch, frozen_stages, checkpointing)
        state = read_state_dict(Path(pretrained).expanduser(), arch) if pretrained else None
        self.net = _create(model, state, pretrained, float(drop_path), dict(kwargs or {}))
        if state is not None:
            _check_loaded(self.net, state, str(pretrained), model)
        fmt = getattr(self.net, "output_fmt", "NCHW")
        self.channels_last_out = getattr(fmt, "value", fmt) == "NHWC"  # e.g. Swin's stages
        info = self.net.feature_info
        strides, channels = info.reduction(), info.channels()
        self.single_scale = len(set(strides)) == 1
        self.pyramid: SimpleFeaturePyramid | None = None
        if self.single_scale:
            width = 256 if out_channels is None else out_channels
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ConfigError(f"backbone {arch}: out_channels must be a positive integer, "
                                  f"got {out_channels!r}")
            self.patch_stride = strides[-1]
            self.levels = {len(strides) - 1: "pyramid"}
            self.pyramid = SimpleFeaturePyramid(channels[-1], width)
            self.feature_info = {f"c{i}": FeatureInfo(width, 2 ** i) for i in range(2, 6)}
        else:
            if out_channels is not None:
                raise ConfigError(f"backbone {arch}: out_channels applies to single-scale "
                                  "(ViT-style) models only; this one gives strides "
                                  f"{strides}")
            self.levels = {}  # output index -> level name; the last map of each stride wins
            for i, s in enumerate(strides):
                level = round(math.log2(s)) if s > 0 else -1
                if 2 ** level == s and 1 <= level <= 5:
                    self.levels = {k: v for k, v in self.levels.items() if v != f"c{level}"}
                    self.levels[i] = f"c{level}"
            missing = [f"c{k}" for k in range(2, 6) if f"c{k}" not in self.levels.values()]
            if missing:
                raise ConfigError(f"backbone {arch}: its feature maps have strides {strides}; "
                                  f"the necks and heads need strides 4, 8, 16 and 32 "
                                  f"({', '.join(missing)} missing)")
            self.feature_info = {name: FeatureInfo(channels[i], strides[i])
                                 for i, name in sorted(self.levels.items())}
        self._own_loop = isinstance(self.net, _timm().models.FeatureDictNet)
        if checkpointing and not self._own_loop:
            target = getattr(self.net, "model", self.net)
            if not hasattr(target, "set_grad_checkpointing"):
                raise ConfigError(f"backbone {arch}: timm offers no activation checkpointing "
                                  "for this model; set checkpointing to false")
            target.set_grad_checkpointing(True)
        if frozen_stages and not self.stages():
            raise ConfigError(f"backbone {arch}: frozen_stages needs a model whose stages can "
                              "be told apart; set it to 0")
        self._freeze()

    def _inner(self) -> nn.Module:
        """The module whose names ``feature_info.module_name()`` uses."""
        return self.net if self._own_loop else getattr(self.net, "model", self.net)

    def stages(self) -> list[nn.Module]:
        """The stem and four stages (``frozen_stages``); [] where they cannot be told apart."""
        root = self._inner()
        own = nn.ParameterList([p for _, p in root.named_parameters(recurse=False)])
        if self.single_scale:
            blocks = getattr(root, "blocks", None)
            if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) < 4:
                return []
            children = list(root.named_children())
            at = [n for n, _ in children].index("blocks")
            before = [m for _, m in children[:at]]
            after = [m for _, m in children[at + 1:]]
            depth = len(blocks)
            cuts = [round(depth * k / 4) for k in range(5)]
            groups: list[nn.Module] = [nn.ModuleList(list(blocks)[a:b])
                                       for a, b in zip(cuts, cuts[1:], strict=False)]
            groups[-1] = nn.ModuleList([*groups[-1], *after])  # the final norm
            return [nn.ModuleList([*before, own]), *groups]
        if self._own_loop:
            targets = set(self.net.return_layers)
            units = list(self.net.named_children())
            # Return ids are feature_info's out_indices; their rank is the position in it.
            ids = sorted(int(i) for i in self.net.return_layers.values())
            ends = {n: self.levels.get(ids.index(int(i)))
                    for n, i in self.net.return_layers.items()}
        else:
            names = self.net.feature_info.module_name()
            targets = set(names)
            units = _units(root, targets)
            ends = {names[i]: level for i, level in self.levels.items()}
        position = {name: k for k, (name, _) in enumerate(units)}
        if not all(name in position for name in ends):
            return []
        end = {level: position[name] for name, level in ends.items() if level}
        c2 = end["c2"]
        stem_end = end["c1"] + 1 if "c1" in end else c2
        cuts = [0, stem_end, c2 + 1, end["c3"] + 1, end["c4"] + 1, end["c5"] + 1]
        modules = [m for _, m in units]
        groups = [nn.ModuleList(modules[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        groups[0] = nn.ModuleList([*groups[0], own])
        return groups

    def _features(self, x: Tensor) -> list[Tensor]:
        if not self._own_loop:
            return list(self.net(x))
        # timm's FeatureDictNet loop, each module through self.run: checkpointed (with
        # BatchNorm statistics kept) when checkpointing is on. In-place modules (a stem's
        # ReLU) would corrupt the saved input of a checkpoint and save nothing, so run bare.
        out: dict[int, Tensor] = {}
        for name, module in self.net.items():
            x = module(x) if getattr(module, "inplace", False) is True else self.run(module, x)
            if name in self.net.return_layers:
                y = x
                if isinstance(y, tuple | list):
                    y = torch.cat(y, 1) if self.net.concat else y[0]
                out[int(self.net.return_layers[name])] = (y.permute(0, 3, 1, 2)
                                                          if self.channels_last_out else y)
        return [out[i] for i in sorted(out)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self._features(x)
        if self.pyramid is None:
            return {level: feats[i] for i, level in self.levels.items()}
        feat = feats[-1]
        if self.patch_stride != PYRAMID_STRIDE:
            # e.g. DINOv2's stride 14: the token grid resampled to the stride-16 grid.
            size = (max(1, x.shape[-2] // PYRAMID_STRIDE), max(1, x.shape[-1] // PYRAMID_STRIDE))
            feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
        return self.pyramid(feat)


BACKBONES.register_prefix(PREFIX, TimmBackbone, check=check_model_name)

__all__ = ["TimmBackbone", "check_model_name"]
