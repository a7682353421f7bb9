"""Configuration: YAML files with ``_base_`` inheritance, ``-o key=value`` overrides, validation.

A config is a file path or the name of a config shipped with mtvision (``demo``,
``benchmarks/nyuv2_resnet50``; ``list_configs()``); ``_base_`` entries are relative to the file
that names them.

Every key is checked against the schema below (or, for the pluggable parts, against the
signature of the registered builder): an unknown key or a wrong type is a ``ConfigError``
naming the key, the file it came from and the closest valid key. ``load_config`` returns a
plain nested dict with every default filled in; ``save_config`` writes it beside a run.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtvision.registry import BACKBONES, BALANCERS, HEADS, NECKS, SHARING, ConfigError, Registry
from mtvision.registry import closest as _closest


@dataclass(frozen=True)
class Field:
    """A leaf of the schema: accepted types, default, optional set of allowed values."""

    types: tuple[type, ...]
    default: Any
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    minimum: float | None = None


@dataclass(frozen=True)
class Named:
    """A section built by a registry: ``{"name": ..., **options of that builder}``."""

    registry: Registry
    default: dict[str, Any] | None = None
    skip: tuple[str, ...] = ()  # arguments the caller passes, not the config
    nullable: bool = False  # null means "none of this part" (e.g. no neck)


@dataclass(frozen=True)
class OptionsOf:
    """An optional mapping of keyword options of one function (checked against its signature)."""

    target: str  # "module:function", imported when validating
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapOf:
    """A section whose keys are free (e.g. task names) and whose values share one spec."""

    value: Any
    default: dict[str, Any] | None = None


@dataclass(frozen=True)
class FreeList:
    """A list of dicts checked where it is used (e.g. albumentations ops)."""

    default: list[Any] | None = None


INT, FLOAT, STR, BOOL = (int,), (int, float), (str,), (bool,)
SEQ = (list, tuple)

SCHEMA: dict[str, Any] = {
    "work_dir": Field(STR, None, nullable=True),
    "model": {
        "backbone": Named(BACKBONES, {"name": "resnet18"}),
        "neck": Named(NECKS, {"name": "fpn"}, skip=("feature_info",), nullable=True),
        "heads": MapOf(Named(HEADS, skip=("feature_info",)), {}),
        # How the tasks share the encoder (mtvision.models.sharing): hard (one backbone and
        # neck, the default), soft {penalty_weight, include_neck} (one copy per task, L2-tied),
        # cross_stitch {alpha} (per-task ResNets mixed after each stage), mtan {hidden}
        # (shared encoder, per-task attention masks).
        "sharing": Named(SHARING, {"name": "hard"}, skip=("parts",)),
        # Tasks trained like the others but left out of train.best_metric 'mean' and Delta_m.
        "aux_tasks": Field(SEQ, []),
        # Loss kernels: auto = Triton on CUDA, the PyTorch reference elsewhere.
        "loss_backend": Field(STR, "auto", choices=("auto", "triton", "torch")),
        # Score the seg and edge heads in one kernel launch (same values as separately).
        "fuse_dense_losses": Field(BOOL, True),
    },
    "data": {
        # One reader (``type``, ``root``, its ``options``), or several in ``datasets``:
        # a list of {type, root, options, tasks, ratio, train_split, val_split}
        # (mtvision.data.build.check_data_config, mtvision.data.mixing).
        "type": Field(STR, "mtvision"),
        "root": Field(STR, "data/shapes"),
        "options": Field((dict,), {}),
        "datasets": FreeList([]),
        "train_split": Field(STR, "train"),
        "val_split": Field(STR, "val"),
        # Generate the built-in shapes data into ``root`` first: options of generate_shapes.
        "synthetic": OptionsOf("mtvision.data.synthetic:generate_shapes", skip=("root",)),
        "image_size": Field(SEQ, [128, 128]),
        "batch_size": Field(INT, 16, minimum=1),
        "val_batch_size": Field(INT, None, nullable=True, minimum=1),
        "num_workers": Field(INT, 2, minimum=0),
        "train_transforms": FreeList([]),
        "skip_invalid": Field(BOOL, False),
    },
    "train": {
        "epochs": Field(INT, 12, minimum=1),
        "max_iters": Field(INT, None, nullable=True, minimum=1),
        "seed": Field(INT, 0),
        "deterministic": Field(BOOL, False),
        "optimizer": {
            "name": Field(STR, "adamw", choices=("adamw", "sgd")),
            "lr": Field(FLOAT, 1e-3),
            "weight_decay": Field(FLOAT, 0.05),
            "momentum": Field(FLOAT, 0.9),
            "betas": Field(SEQ, [0.9, 0.999]),
            "backbone_lr_mult": Field(FLOAT, 1.0),
        },
        "scheduler": {
            "name": Field(STR, "cosine", choices=("cosine", "constant")),
            "warmup_iters": Field(INT, 100),
            "warmup_factor": Field(FLOAT, 0.001),
            "min_lr_ratio": Field(FLOAT, 0.01),
        },
        "grad_clip": Field(FLOAT, 10.0, nullable=True),
        "amp": Field(STR, "auto", choices=("auto", "none", "bf16", "fp16")),
        "channels_last": Field(BOOL, False),
        # Model EMA: {decay: 0.9998, warmup: 2000} (null: off); evaluated and exported.
        "ema": OptionsOf("mtvision.engine.ema:ModelEMA", skip=("model",)),
        # torch.compile of backbone, neck and heads: false, true (inductor) or a backend name.
        "compile": Field((bool, str), False),
        "log_interval": Field(INT, 20, minimum=1),
        "eval_interval": Field(INT, 1, minimum=1),
        "checkpoint_interval": Field(INT, 1, minimum=1),
        # Also write last.pt every this many iterations (a killed run loses at most these).
        "checkpoint_iters": Field(INT, None, nullable=True, minimum=1),
        # Micro-batches of data.batch_size accumulated into one optimizer step.
        "accumulate": Field(INT, 1, minimum=1),
        # Under torchrun on GPUs: BatchNorm statistics over the global batch.
        "sync_bn": Field(BOOL, False),
        # "mean" (of the tasks' headline metrics) or "task.metric", e.g. "seg.mIoU".
        "best_metric": Field(STR, "mean"),
        # Stop with an error after this many steps in a row skipped for non-finite values.
        "max_nonfinite_steps": Field(INT, 20, minimum=1),
        # Under torchrun: compare a checksum of the weights across the ranks every this many
        # steps and stop with an error when they differ (0: never).
        "check_replicas": Field(INT, 0, minimum=0),
        "tensorboard": Field(BOOL, True),
    },
    "balancer": Named(BALANCERS, {"name": "fixed"}, skip=("tasks",)),
    "eval": {
        "edge_thresholds": Field(INT, 99),
        "edge_max_dist": Field(FLOAT, 0.0075),
        # exact: the BSDS protocol with its one-to-one pixel correspondence, used by
        # tools/eval.py; approx: matching by distance alone (faster, scores somewhat higher),
        # used by the periodic evaluations during training unless train_edge_mode says otherwise.
        "edge_mode": Field(STR, "exact", choices=("exact", "approx")),
        "train_edge_mode": Field(STR, "approx", choices=("exact", "approx")),
        # The exact mode's solver: optimal (exact minimum of the correspondence's cost,
        # deterministic, ~10x faster) or csa (pyEdgeEval's copy of the benchmark's own code).
        "edge_matcher": Field(STR, "optimal", choices=("optimal", "csa")),
        # Edge NMS (edgesNms: r 1, s 5, m 1.01) of soft maps before thresholding, as HED, RCF,
        # BDCN and PiDiNet report their ODS/OIS/AP.
        "edge_nms": Field(BOOL, True),
        # Processes scoring edge images at once (null: the CPU count).
        "workers": Field(INT, None, nullable=True, minimum=1),
        # Seg, parts, depth and normals: original = predictions un-letterboxed and resized
        # (bilinear; seg logits before the arg-max) to each image's size and scored against
        # the labels as read, as mmseg does (tools/eval.py); fast = scored at the input size
        # against the letterboxed labels (the periodic evaluations unless train_dense_protocol
        # says otherwise).
        "dense_protocol": Field(STR, "original", choices=("original", "fast")),
        "train_dense_protocol": Field(STR, "fast", choices=("original", "fast")),
        "max_images": Field(INT, None, nullable=True),
        # Saliency: maxF / mIoU over this many thresholds k / (n + 1), F-beta with this beta^2.
        "sal_thresholds": Field(INT, 19, minimum=1),
        "sal_beta2": Field(FLOAT, 0.3),
    },
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _register_all() -> None:
    """Import the modules whose registrations the validation needs."""
    import mtvision.balancing  # noqa: F401
    import mtvision.data.formats  # noqa: F401
    import mtvision.models  # noqa: F401


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a YAML text file (byte {e.start} is not UTF-8; a "
                          "checkpoint or image given as the config?)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(data).__name__}")
    return data


def _is_named(dotted: str) -> bool:
    """Whether the section at ``dotted`` (e.g. ``balancer``, ``model.heads.seg``) is a
    registry-built ``{name, **options}`` section of the schema."""
    spec: Any = SCHEMA
    for key in dotted.split("."):
        if isinstance(spec, MapOf):  # a free key (a task name) of a map
            spec = spec.value
            continue
        if not isinstance(spec, dict) or key not in spec:
            return False
        spec = spec[key]
    return isinstance(spec, Named)


def _merge(base: dict, new: dict, origins: dict[str, str], source: str, prefix: str = "") -> dict:
    """Merge ``new`` into ``base`` (dicts recursively, everything else replaced).

    A registry-built section (``Named``: backbone, neck, heads, sharing, balancer) whose
    ``name`` changes starts afresh: the previous builder's options do not carry over to
    another one (``-o balancer.name=pcgrad`` on a config with ``fixed`` weights)."""
    out = dict(base)
    if new.get("_delete_"):
        out = {}
        new = {k: v for k, v in new.items() if k != "_delete_"}
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        old = out.get(key)
        if (isinstance(value, dict) and isinstance(old, dict) and "name" in value
                and value["name"] != old.get("name") and _is_named(dotted)):
            old = out[key] = {}
            for k in [k for k in origins if k.startswith(dotted + ".")]:
                del origins[k]
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = _merge(out[key], value, origins, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "_delete_"}
                out[key] = _merge({}, value, origins, source, dotted + ".")
        origins[dotted] = source
    return out


def _load_tree(path: Path, origins: dict[str, str], stack: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in stack:
        raise ConfigError(f"{path}: _base_ inheritance cycle")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for b in bases:
        merged = _merge(merged, _load_tree(path.parent / b, origins, (*stack, path)), origins,
                        str(path.parent / b))
    return _merge(merged, data, origins, str(path))


CONFIG_SUFFIXES = (".yaml", ".yml")


def config_dir() -> Path:
    """The shipped configs: ``mtvision/configs`` in an installed wheel (package data), the
    repository's ``configs/`` in a checkout (the wheel maps that folder to the former)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if folder.is_dir():
            return folder
    raise ConfigError(f"the configs shipped with mtvision are missing (no {here / 'configs'}); "
                      "reinstall mtvision")


def list_configs() -> list[str]:
    """Names of the shipped configs (paths under ``config_dir()`` without the suffix), sorted;
    the ``_base_`` pieces are left out."""
    root = config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix()
                  for p in root.rglob("*") if p.suffix in CONFIG_SUFFIXES
                  and "_base_" not in p.relative_to(root).parts)


def resolve_config(config: str | os.PathLike) -> Path:
    """The file of ``config``: an existing file as given, else a shipped config of that name
    (``demo``, ``benchmarks/nyuv2_resnet50``, with or without ``configs/`` and ``.yaml``)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    name = path.as_posix()
    if not path.is_absolute():
        name = name.removeprefix("configs/")
        stem = name[: -len(path.suffix)] if path.suffix in CONFIG_SUFFIXES else name
        for suffix in CONFIG_SUFFIXES:
            shipped = config_dir() / f"{stem}{suffix}"
            if shipped.is_file():
                return shipped
        raise ConfigError(f"config file not found: {config}, and mtvision ships no config named "
                          f"'{stem}'{_closest(stem, list_configs())} (mtvision configs lists them)")
    raise ConfigError(f"config file not found: {config}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); the value is read as YAML (numbers, lists, null...)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(cfg: dict, overrides: list[str], origins: dict[str, str]) -> dict:
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _merge(cfg, nested, origins, f"override -o {text}")
    return cfg


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _typename(types: tuple[type, ...]) -> str:
    return " or ".join("list" if t in SEQ else t.__name__ for t in dict.fromkeys(types))


def _where(origins: dict[str, str], dotted: str) -> str:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        src = origins.get(".".join(parts[:i]))
        if src:
            return src
    return "<defaults>"


def _check_named(spec: Named, value: Any, dotted: str, origins: dict[str, str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{_where(origins, dotted)}: '{dotted}' must be a mapping with a 'name'")
    if "name" not in value:
        raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' needs a 'name' "
                          f"(one of {', '.join(spec.registry.names())})")
    name = value["name"]
    if name not in spec.registry:
        raise ConfigError(
            f"{_where(origins, dotted + '.name')}: unknown {spec.registry.kind} '{name}' at "
            f"'{dotted}.name'{_closest(str(name), spec.registry.names())}")
    try:
        builder = spec.registry.get(name)  # a prefix family (timm:<model>) checks the rest
    except ConfigError as e:
        raise ConfigError(f"{_where(origins, dotted + '.name')}: {e}") from None
    params = inspect.signature(builder).parameters
    valid = spec.registry.option_names(name, spec.skip)  # None: takes **kwargs
    for key, v in value.items():
        if key == "name":
            continue
        if valid is not None and key not in valid:
            raise ConfigError(
                f"{_where(origins, f'{dotted}.{key}')}: unknown key '{dotted}.{key}' "
                f"for {spec.registry.kind} '{name}'{_closest(key, valid)}")
        default = params[key].default if key in params else inspect.Parameter.empty
        if default not in (None, inspect.Parameter.empty) and v is not None:
            types: tuple[type, ...] = (type(default),)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                types = FLOAT
            elif isinstance(default, SEQ):
                types = SEQ
            if isinstance(default, int) and not isinstance(default, bool):
                types = INT
            if not _type_ok(v, types):
                raise ConfigError(
                    f"{_where(origins, f'{dotted}.{key}')}: '{dotted}.{key}' must be "
                    f"{_typename(types)}, got {type(v).__name__} ({v!r})")
    return dict(value)


def _check_options(spec: OptionsOf, value: Any, dotted: str,
                   origins: dict[str, str]) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' must be a mapping or null")
    module, _, name = spec.target.partition(":")
    func = getattr(importlib.import_module(module), name)
    valid = [n for n in inspect.signature(func).parameters if n not in spec.skip]
    for key in value:
        if key not in valid:
            raise ConfigError(f"{_where(origins, f'{dotted}.{key}')}: unknown key "
                              f"'{dotted}.{key}'{_closest(key, valid)}; valid: {', '.join(valid)}")
    return dict(value)


def _validate(schema: dict, cfg: dict, origins: dict[str, str], prefix: str = "") -> dict:
    if not isinstance(cfg, dict):
        raise ConfigError(f"{_where(origins, prefix.rstrip('.'))}: '{prefix.rstrip('.')}' "
                          "must be a mapping")
    for key in cfg:
        if key not in schema:
            dotted = f"{prefix}{key}"
            raise ConfigError(f"{_where(origins, dotted)}: unknown key '{dotted}'"
                              f"{_closest(key, list(schema))}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        dotted = f"{prefix}{key}"
        given = key in cfg
        value = cfg.get(key)
        if isinstance(spec, dict):
            out[key] = _validate(spec, value if given and value is not None else {}, origins,
                                 dotted + ".")
        elif isinstance(spec, Field):
            if not given:
                out[key] = copy.deepcopy(spec.default)
                continue
            if value is None:
                if not spec.nullable:
                    raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' may not be null")
            elif not _type_ok(value, spec.types):
                raise ConfigError(
                    f"{_where(origins, dotted)}: '{dotted}' must be "
                    f"{_typename(spec.types)}, got {type(value).__name__} ({value!r})")
            elif spec.minimum is not None and value < spec.minimum:
                raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' must be >= "
                                  f"{spec.minimum}, got {value!r}")
            elif spec.choices is not None and value not in spec.choices:
                raise ConfigError(
                    f"{_where(origins, dotted)}: '{dotted}' is {value!r}; choose one of "
                    f"{list(spec.choices)}{_closest(str(value), list(spec.choices))}")
            out[key] = value
        elif isinstance(spec, Named):
            if given and value is None and spec.nullable:
                out[key] = None
            elif not given or value is None:
                out[key] = copy.deepcopy(spec.default)
            else:
                out[key] = _check_named(spec, value, dotted, origins)
        elif isinstance(spec, MapOf):
            value = value if given and value is not None else copy.deepcopy(spec.default)
            if not isinstance(value, dict):
                raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' must be a mapping")
            # A null entry removes what a base file defined (e.g. -o model.heads.det=null).
            out[key] = {k: _check_named(spec.value, v, f"{dotted}.{k}", origins)
                        for k, v in value.items() if v is not None}
        elif isinstance(spec, OptionsOf):
            out[key] = _check_options(spec, value, dotted, origins) if given else None
        elif isinstance(spec, FreeList):
            value = value if given and value is not None else copy.deepcopy(spec.default)
            if not isinstance(value, list):
                raise ConfigError(f"{_where(origins, dotted)}: '{dotted}' must be a list")
            out[key] = value
    return out


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read ``path`` (a file or a shipped config name) with its ``_base_`` files, apply
    ``overrides``, validate, fill defaults."""
    _register_all()
    origins: dict[str, str] = {}
    cfg = _load_tree(resolve_config(path), origins)
    cfg = apply_overrides(cfg, overrides or [], origins)
    return _check_dataset(_validate(SCHEMA, cfg, origins), origins)


def _check_dataset(cfg: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    from mtvision.data.build import check_data_config

    check_data_config(cfg["data"], lambda key: _where(origins, key))
    return cfg


def validate_config(cfg: dict[str, Any], source: str = "<dict>") -> dict[str, Any]:
    """Validate an in-memory config (e.g. one stored in a checkpoint) and fill defaults."""
    _register_all()
    origins: dict[str, str] = {}
    _merge({}, cfg, origins, source)
    return _check_dataset(_validate(SCHEMA, cfg, origins), origins)


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, path)
    return path
