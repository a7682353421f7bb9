"""Training on several datasets at once, each feeding some tasks, drawn with fixed ratios.

``MixedDataset`` concatenates readers (e.g. COCO for det + seg, BSDS500 for edges, a folder of
images for classification). Each sample keeps only its own dataset's tasks, so collation marks the
others absent and their losses and metrics skip it. ``MixedSampler`` draws the dataset of every
position with probability ``ratio / sum(ratios)`` and walks each dataset in its own shuffled
order, so a small dataset is repeated and a large one subsampled as the ratios ask.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from mtvision.data.sample import TASKS
from mtvision.registry import ConfigError


class MixedDataset(Dataset):
    """The concatenation of ``datasets``; classes per task come from the datasets feeding it.

    Two datasets that feed the same task must define the same classes for it (the same label
    must mean the same class), otherwise a ``ConfigError`` names both.
    """

    def __init__(self, datasets: Sequence[Any], names: Sequence[str] | None = None,
                 ratios: Sequence[float] | None = None) -> None:
        if not datasets:
            raise ConfigError("data.datasets is empty")
        self.datasets = list(datasets)
        self.names = list(names or [f"datasets[{i}]" for i in range(len(datasets))])
        if ratios is not None:
            if len(ratios) != len(datasets) or any(r <= 0 for r in ratios):
                raise ConfigError(f"data.datasets ratios must be > 0, one per dataset, got "
                                  f"{list(ratios)}")
        self.ratios = list(ratios) if ratios is not None else None
        self.offsets = [0]
        for ds in self.datasets:
            self.offsets.append(self.offsets[-1] + len(ds))
        self.tasks = [t for t in TASKS if any(t in ds.tasks for ds in self.datasets)]
        self.det_classes = self._classes("det", "det_classes")
        self.seg_classes = self._classes("seg", "seg_classes")
        self.cls_classes = self._classes("cls", "cls_classes")
        self.parts_classes = self._classes("parts", "parts_classes")
        self.multi_label = any(ds.multi_label for ds in self.datasets if "cls" in ds.tasks)

    def _classes(self, task: str, attr: str) -> list[str]:
        ref: list[str] = []
        ref_name = ""
        for ds, name in zip(self.datasets, self.names, strict=True):
            if task not in ds.tasks:
                continue
            classes = list(getattr(ds, attr))
            if not ref_name:
                ref, ref_name = classes, name
            elif classes != ref:
                raise ConfigError(f"{task} classes differ between {ref_name} {ref} and "
                                  f"{name} {classes}")
        return ref

    @property
    def num_classes(self) -> dict[str, int]:
        n = {"det": len(self.det_classes), "seg": len(self.seg_classes),
             "cls": len(self.cls_classes), "parts": len(self.parts_classes)}
        return {t: n.get(t, 1) for t in self.tasks}

    @property
    def sizes(self) -> list[int]:
        return [len(ds) for ds in self.datasets]

    @property
    def num_skipped(self) -> int:
        return sum(getattr(ds, "num_skipped", 0) for ds in self.datasets)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset number, index within it)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        d = bisect.bisect_right(self.offsets, index) - 1
        return d, index - self.offsets[d]

    def __getitem__(self, index: int) -> dict[str, Any]:
        d, i = self.locate(index)
        return self.datasets[d][i]

    def set_epoch(self, seed: int) -> None:
        for k, ds in enumerate(self.datasets):
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(seed * 131 + k)


class MixedSampler(Sampler[int]):
    """Global indices of a ``MixedDataset`` drawn by dataset ratio, fixed by (seed, epoch).

    An epoch has ``length`` positions (default: the total number of samples). Resuming with
    ``set_epoch(epoch, start)`` replays exactly the remaining positions of that epoch.
    """

    def __init__(self, sizes: Sequence[int], ratios: Sequence[float], seed: int,
                 length: int | None = None) -> None:
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"every mixed dataset needs samples, got sizes {list(sizes)}")
        self.sizes = list(sizes)
        total = float(sum(ratios))
        self.probs = torch.tensor([r / total for r in ratios], dtype=torch.float64)
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.seed = seed
        self.length = int(length or sum(sizes))
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        """All positions of ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        choice = torch.multinomial(self.probs, self.length, replacement=True, generator=g)
        out = torch.empty(self.length, dtype=torch.int64)
        for d, size in enumerate(self.sizes):
            where = (choice == d).nonzero().flatten()
            if not len(where):
                continue
            # Whole shuffled passes over dataset d, as many as its share of the epoch needs.
            passes = -(-len(where) // size)
            perm = torch.cat([torch.randperm(size, generator=g) for _ in range(passes)])
            out[where] = perm[:len(where)] + self.offsets[d]
        return out.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start:])

    def __len__(self) -> int:
        return self.length - self.start
