"""Stacking samples into a batch, with presence flags for partially labelled data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mtvision.data.io import DataError
from mtvision.data.sample import TASKS

IGNORE = 255


def _fill(task: str, example: Any, hw: tuple[int, int]) -> Any:
    """The stand-in target of a sample that lacks ``task`` (its loss is masked by ``present``)."""
    if task == "det":
        return {"boxes": torch.zeros((0, 4), dtype=torch.float32),
                "labels": torch.zeros((0,), dtype=torch.int64)}
    if task in ("seg", "edge", "parts", "sal"):
        return torch.full(hw, IGNORE, dtype=torch.int64)
    if task == "cls":
        if example.dim() == 0:  # single label
            return torch.tensor(-1, dtype=torch.int64)
        return torch.zeros_like(example)  # multi-hot
    if task in ("depth", "normals"):
        return torch.zeros_like(example)  # 0 = invalid depth; the zero vector = invalid normal
    raise KeyError(f"unknown task '{task}'")


def check_label_ranges(sample: dict[str, Any], num_classes: Mapping[str, int],
                       source: str = "dataset") -> None:
    """Every label of ``sample`` lies in ``[0, num_classes[task])`` (255 = ignore in masks).

    The one check that holds for every dataset, reader or not, against the classes the *model*
    has: an out-of-range label is an error here, before any loss, because the losses cannot
    agree on it (the PyTorch reference raises deep in ``cross_entropy``, or asserts on a CUDA
    device, while the Triton kernels, which never sync with the host, return NaN).
    """
    for task, target in sample["targets"].items():
        n = num_classes.get(task)
        if n is None:
            continue
        if isinstance(target, dict):  # detection: the boxes' labels (crowd regions too)
            values = torch.cat([target[k].reshape(-1) for k in ("labels", "crowd_labels")
                                if k in target])
            bad = values[(values < 0) | (values >= n)]
            allowed, dense = f"0..{n - 1}", False
        elif target.is_floating_point() or target.dim() == 1:  # multi-hot cls, depth, normals
            continue
        else:  # single-label cls ([]), or a dense label map ([H, W])
            flat, dense = target.reshape(-1), target.dim() > 0
            out = (flat < 0) | (flat >= n)
            if dense:
                out &= flat != IGNORE
            bad = flat[out]
            allowed = f"0..{n - 1}" + (f", or {IGNORE} = ignore" if dense else "")
        if bad.numel():
            value = int(bad.max()) if int(bad.max()) >= n else int(bad.min())
            hint = ("; raw label ids where train ids are expected (e.g. Cityscapes labelIds "
                    "instead of labelTrainIds)?" if dense else "")
            raise DataError(
                f"{source}: sample '{sample.get('file_name', '?')}': {task} label {value} is "
                f"out of range for the model's {n} {task} classes ({allowed}){hint}")


def collate(samples: list[dict[str, Any] | None],
            num_classes: Mapping[str, int] | None = None,
            source: str = "dataset") -> dict[str, Any] | None:
    """Batch dataset samples: ``{"images": float[B, 3, H, W], "image_ids": long[B],
    "file_names", "orig_sizes", "targets": {task: ...}, "present": {task: bool[B]}}``.

    A task appears in ``targets`` / ``present`` when at least one sample has it; samples
    without it get an empty det target, seg/edge/parts/sal maps full of 255, or cls -1 (multi-label:
    zeros), depth and normals zeros (invalid), and ``present`` False. Target formats:
    ``mtvision.models.heads.base``. ``"edge_gts"`` lists each sample's full-resolution annotator
    boundary maps (``None`` where it has none), for the edge benchmark protocol;
    ``"orig_targets"`` each sample's dense labels at the original size (``None`` unless the
    dataset was asked for them: ``want_original_targets``).

    ``None`` samples (left out by an evaluation dataset with ``skip_invalid``) are dropped; a
    batch of nothing but them is ``None``. With ``num_classes`` (the model's classes per task)
    every sample's labels are checked first (``check_label_ranges``; ``source`` names the
    dataset in the error).
    """
    if not samples:
        raise ValueError("collate() got an empty list of samples")
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    if num_classes:
        for s in samples:
            check_label_ranges(s, num_classes, source)
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"images in a batch must have one size, got {sorted(sizes)}; "
                         "use build_transforms(..., image_size) to letterbox them")
    images = torch.stack([s["image"] for s in samples])
    hw = tuple(images.shape[-2:])
    tasks = [t for t in TASKS if any(t in s["targets"] for s in samples)]
    tasks += sorted({t for s in samples for t in s["targets"]} - set(tasks))

    targets: dict[str, Any] = {}
    present: dict[str, torch.Tensor] = {}
    for task in tasks:
        example = next(s["targets"][task] for s in samples if task in s["targets"])
        items = [s["targets"][task] if task in s["targets"] else _fill(task, example, hw)
                 for s in samples]
        present[task] = torch.tensor([task in s["targets"] for s in samples], dtype=torch.bool)
        targets[task] = items if task == "det" else torch.stack(items)
    return {
        "images": images,
        "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.int64),
        "file_names": [s["file_name"] for s in samples],
        "orig_sizes": [tuple(s["orig_size"]) for s in samples],
        "targets": targets,
        "present": present,
        "edge_gts": [s.get("edge_gts") for s in samples],
        "orig_targets": [s.get("orig_targets") for s in samples],
    }
