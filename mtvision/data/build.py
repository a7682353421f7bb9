"""Datasets and loaders from the ``data`` config section."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtvision.data import formats as _formats  # noqa: F401 - registers the readers
from mtvision.data.collate import collate
from mtvision.data.mixing import MixedDataset, MixedSampler
from mtvision.data.sample import TASKS
from mtvision.data.transforms import build_transforms, normalize_images
from mtvision.registry import DATASETS, ConfigError, closest

# Keys of one entry of ``data.datasets`` (besides the reader's own ``options``).
MIX_KEYS = ("type", "root", "options", "tasks", "ratio", "train_split", "val_split")


def reader_options(name: str) -> list[str]:
    """The options a reader accepts in ``data.options``: its own and ``ReaderDataset``'s."""
    from mtvision.data.base import ReaderDataset

    fixed = {"self", "root", "split", "transforms", "skip_invalid"}
    names: list[str] = []
    for fn in (DATASETS.get(name).__init__, ReaderDataset.__init__):
        for p in inspect.signature(fn).parameters.values():
            if p.name not in fixed and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) \
                    and p.name not in names:
                names.append(p.name)
    return names


def check_data_config(dcfg: dict[str, Any], where: Callable[[str], str] = lambda k: k) -> None:
    """Check ``data.type``, ``data.options`` and every ``data.datasets`` entry; one clear
    ``ConfigError`` naming the key (``where(key)`` adds the file it came from)."""
    def check_reader(name: Any, options: Any, key: str) -> None:
        if not isinstance(name, str) or name not in DATASETS:
            raise ConfigError(f"{where(key + '.type')}: unknown dataset type '{name}'"
                              f"{closest(str(name), DATASETS.names())}; available: "
                              f"{', '.join(DATASETS.names())}")
        if not isinstance(options, dict):
            raise ConfigError(f"{where(key + '.options')}: '{key}.options' must be a mapping")
        valid = reader_options(name)
        for opt in options:
            if opt not in valid:
                raise ConfigError(f"{where(f'{key}.options.{opt}')}: unknown option "
                                  f"'{key}.options.{opt}' for dataset type '{name}'"
                                  f"{closest(str(opt), valid)}; valid: {', '.join(valid)}")

    entries = dcfg.get("datasets") or []
    if not entries:
        check_reader(dcfg["type"], dcfg.get("options") or {}, "data")
        return
    with_ratio = 0
    for i, entry in enumerate(entries):
        key = f"data.datasets[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where('data.datasets')}: '{key}' must be a mapping with type "
                              "and root")
        for k in entry:
            if k not in MIX_KEYS:
                raise ConfigError(f"{where('data.datasets')}: unknown key '{key}.{k}'"
                                  f"{closest(str(k), list(MIX_KEYS))}; valid: "
                                  f"{', '.join(MIX_KEYS)}")
        for k in ("type", "root"):
            if k not in entry:
                raise ConfigError(f"{where('data.datasets')}: '{key}' needs '{k}'")
        check_reader(entry["type"], entry.get("options") or {}, key)
        ratio = entry.get("ratio")
        if ratio is not None:
            with_ratio += 1
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
                raise ConfigError(f"{where('data.datasets')}: '{key}.ratio' must be a number "
                                  f"> 0, got {ratio!r}")
        tasks = entry.get("tasks")
        if tasks is not None and (not isinstance(tasks, list)
                                  or any(t not in TASKS for t in tasks)):
            raise ConfigError(f"{where('data.datasets')}: '{key}.tasks' must be a list of "
                              f"{', '.join(TASKS)}, got {tasks!r}")
    if with_ratio not in (0, len(entries)):
        raise ConfigError(f"{where('data.datasets')}: give every dataset a ratio, or none "
                          "(then each is drawn in proportion to its size)")


def _reader(name: str, root: str, split: str, options: dict[str, Any], transforms: Any,
            skip_invalid: bool, where: str, train: bool) -> Dataset:
    ds = DATASETS.build({"name": name, "root": root, "split": split,
                         "transforms": transforms, "skip_invalid": skip_invalid, **options},
                        where)
    # Evaluation leaves a bad sample out rather than scoring its replacement twice.
    ds.replace_invalid = train
    return ds


def build_dataset(data_cfg: dict[str, Any], split: str | None, train: bool) -> Dataset:
    """The dataset of ``split`` with the train or evaluation transforms.

    With ``data.datasets`` it is a ``MixedDataset`` of every entry (each with its own split:
    ``train_split`` / ``val_split`` of the entry, else of ``data``; an entry whose val_split is
    null is left out of evaluation). With ``data.synthetic`` set, the built-in shapes data is
    generated into ``data.root`` first (cached: a second call reuses it).
    """
    check_data_config(data_cfg)
    if data_cfg.get("synthetic"):
        from mtvision.data.synthetic import generate_shapes

        generate_shapes(data_cfg["root"], **data_cfg["synthetic"])
    size = tuple(data_cfg["image_size"])
    ops = data_cfg["train_transforms"] if train else None
    transforms = build_transforms(ops, size, train, where="data.train_transforms")
    entries = data_cfg.get("datasets") or []
    if not entries:
        return _reader(data_cfg["type"], data_cfg["root"], split, data_cfg.get("options") or {},
                       transforms, data_cfg["skip_invalid"], "data", train)
    key = "train_split" if train else "val_split"
    parts, names, ratios = [], [], []
    for i, entry in enumerate(entries):
        entry_split = entry[key] if key in entry else (split or data_cfg[key])
        if entry_split is None:
            continue
        options = dict(entry.get("options") or {})
        if entry.get("tasks") is not None:
            options["tasks"] = entry["tasks"]
        parts.append(_reader(entry["type"], entry["root"], entry_split, options, transforms,
                             data_cfg["skip_invalid"], f"data.datasets[{i}]", train))
        names.append(f"data.datasets[{i}] ({entry['type']} '{entry['root']}')")
        ratios.append(entry.get("ratio"))
    if not parts:
        raise ConfigError(f"no dataset in data.datasets has a {key}")
    use_ratios = [float(r) for r in ratios] if all(r is not None for r in ratios) else None
    return MixedDataset(parts, names, use_ratios if train else None)


def want_original_targets(ds: Any) -> None:
    """Have ``ds`` (or each reader of a mixture) add ``"orig_targets"`` to its samples: the
    dense labels at the original resolution, for the evaluation at the original size. Set
    before the loader's workers start (they hold copies of the dataset)."""
    from mtvision.data.base import ReaderDataset

    for d in ds.datasets if isinstance(ds, MixedDataset) else [ds]:
        if isinstance(d, ReaderDataset):
            d.original_targets = True


def dataset_classes(ds: Any) -> dict[str, list[str]]:
    """Class names per task, as stored in checkpoints."""
    return {"det": list(ds.det_classes), "seg": list(ds.seg_classes),
            "cls": list(ds.cls_classes), "parts": list(getattr(ds, "parts_classes", []))}


def check_classes_agree(ref: dict[str, list[str]], other: dict[str, list[str]],
                        ref_name: str, other_name: str) -> None:
    """Label ids mean the same classes in both (each dataset maps its own category ids)."""
    for task, names in ref.items():
        if names and other.get(task) and other[task] != names:
            raise ConfigError(f"{task} classes differ between {ref_name} {names} and "
                              f"{other_name} {other[task]}")


class EpochSampler(Sampler[int]):
    """A random order fixed by (seed, epoch), starting at ``start``: resuming mid-epoch
    replays exactly the remaining samples of the interrupted epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return iter(order[self.start:])

    def __len__(self) -> int:
        return self.n - self.start


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share of a sampler's order, for distributed training and evaluation.

    Training (``batch_size`` given): global batch k is positions ``[k W b, (k + 1) W b)`` of the
    base order and rank r takes ``[k W b + r b, k W b + (r + 1) b)``, so the W ranks together
    see exactly the batches one process with batch W b would (incomplete global batches are
    dropped). Evaluation (``batch_size=None``): every W-th position from ``rank``, nothing
    repeated or padded, so merged metrics equal one process's. ``set_epoch(epoch, start)``
    forwards to the base sampler; ``start`` counts positions of the global order.
    """

    def __init__(self, base: EpochSampler | MixedSampler, rank: int, world: int,
                 batch_size: int | None = None) -> None:
        self.base, self.rank, self.world, self.batch_size = base, rank, world, batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch, start)

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        if self.batch_size is None:
            return iter(order[self.rank::self.world])
        b, gb = self.batch_size, self.batch_size * self.world
        return iter(i for k in range(len(order) // gb)
                    for i in order[k * gb + self.rank * b:k * gb + (self.rank + 1) * b])

    def __len__(self) -> int:
        n = len(self.base)
        if self.batch_size is None:
            return len(range(self.rank, n, self.world))
        return n // (self.batch_size * self.world) * self.batch_size


def build_loader(ds: Dataset, batch_size: int, num_workers: int, train: bool,
                 seed: int = 0, rank: int = 0, world: int = 1,
                 num_classes: dict[str, int] | None = None,
                 pin_memory: bool = False) -> DataLoader:
    """A loader whose sampler is fixed by (seed, epoch) and can start mid-epoch.

    A training ``MixedDataset`` with ratios is drawn by ``MixedSampler``. With ``world`` > 1
    the loader yields rank ``rank``'s share (``ShardSampler``); ``batch_size`` is per rank.
    ``num_classes`` (the model's classes per task): every sample's labels are checked against
    them as batches are made (``collate.check_label_ranges``), in the loader's workers.
    ``pin_memory`` (for CUDA) makes the host-to-device copies asynchronous. Workers persist
    across epochs (no start-up per epoch); augmentations still follow each epoch's seed, which
    ``ReaderDataset.set_epoch`` keeps in shared memory."""
    sampler: EpochSampler | MixedSampler | ShardSampler
    if train and isinstance(ds, MixedDataset) and ds.ratios is not None:
        sampler = MixedSampler(ds.sizes, ds.ratios, seed)
    else:
        sampler = EpochSampler(len(ds), seed, shuffle=train)
    if world > 1:
        sampler = ShardSampler(sampler, rank, world, batch_size if train else None)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=functools.partial(collate, num_classes=num_classes,
                                                   source=getattr(ds, "source", type(ds).__name__)),
                      drop_last=train,
                      generator=g, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)


def head_class_counts(model_cfg: dict[str, Any]) -> dict[str, int]:
    """``{task: num_classes}`` of the heads that have classes (the label ranges to check)."""
    return {t: int(h["num_classes"]) for t, h in model_cfg["heads"].items()
            if isinstance(h, dict) and h.get("num_classes") is not None}


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Images and targets onto ``device``; uint8 images are normalised there
    (``normalize_images``). From pinned memory (``build_loader`` on CUDA) the copies are
    asynchronous. The presence flags stay on the host: the decisions made on them (which
    tasks, which images) then need no device sync, and the heads copy them where a mask needs
    them (``models.heads.base.presence_on``)."""
    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    out = dict(batch)
    for key in ("images", "targets"):
        out[key] = move(batch[key])
    out["images"] = normalize_images(out["images"])
    return out
