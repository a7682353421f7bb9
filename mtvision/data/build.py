"""Datasets and loaders from the ``data`` config section."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtvision.data import formats as _formats  # noqa: F401 - registers the readers
from mtvision.data.collate import collate
from mtvision.data.transforms import build_transforms
from mtvision.registry import DATASETS, ConfigError


def build_dataset(data_cfg: dict[str, Any], split: str, train: bool) -> Dataset:
    """The dataset of ``split`` with the train or evaluation transforms.

    With ``data.synthetic`` set, the built-in shapes data is generated into ``data.root``
    first (cached: a second call reuses it).
    """
    if data_cfg.get("synthetic"):
        from mtvision.data.synthetic import generate_shapes

        generate_shapes(data_cfg["root"], **data_cfg["synthetic"])
    size = tuple(data_cfg["image_size"])
    ops = data_cfg["train_transforms"] if train else None
    transforms = build_transforms(ops, size, train, where="data.train_transforms")
    return DATASETS.build({"name": data_cfg["type"], "root": data_cfg["root"], "split": split,
                           "transforms": transforms, "skip_invalid": data_cfg["skip_invalid"]},
                          "data")


def dataset_classes(ds: Any) -> dict[str, list[str]]:
    """Class names per task, as stored in checkpoints."""
    return {"det": list(ds.det_classes), "seg": list(ds.seg_classes),
            "cls": list(ds.cls_classes)}


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


def build_loader(ds: Dataset, batch_size: int, num_workers: int, train: bool,
                 seed: int = 0) -> DataLoader:
    sampler = EpochSampler(len(ds), seed, shuffle=train)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=train,
                      generator=g, persistent_workers=False)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Images, targets and presence flags onto ``device``."""
    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    out = dict(batch)
    for key in ("images", "targets", "present"):
        out[key] = move(batch[key])
    return out
