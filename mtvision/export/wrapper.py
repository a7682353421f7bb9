"""The graph that gets exported: a normalised image batch in, one plain tensor per task out.

``MultiTaskModel.forward`` returns nested dicts with Python ints and per-level lists, which
neither ONNX nor TorchScript can return; ``ExportModule`` turns each head's raw outputs into a
single tensor, in the order of ``ExportModule.output_names`` (the task names, in the model's
task order):

- ``det``: float[B, N, 4 + C], per location the box x1, y1, x2, y2 (model-input pixels,
  clipped to the input) then the C class scores ``sqrt(sigmoid(cls) * sigmoid(ctr))``, i.e.
  ``FCOSHead.postprocess`` before thresholding, top-k and NMS; with ``nms=True`` float[B,
  max_detections, 6] rows (x1, y1, x2, y2, score, label), best first, zero rows as padding.
- ``seg``: float[B, C, H, W] class logits (arg-max over C is the class map).
- ``edge``: float[B, 1, H, W] boundary probability (sigmoid of the fused HED map).
- ``cls``: float[B, C] probabilities (softmax; sigmoid when the head is multi-label).
- ``depth``: float[B, 1, H, W] depth; ``normals``: float[B, 3, H, W] unit normals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from mtvision.models.heads.detection import FCOSHead
from mtvision.models.multitask import MultiTaskModel

KINDS = ("det", "seg", "edge", "cls", "depth", "normals")


class ExportError(RuntimeError):
    """An export that cannot be made or whose exported model disagrees with PyTorch."""


def output_shapes(model: MultiTaskModel, tasks: Sequence[str], image_size: tuple[int, int],
                  nms: bool, batch: int | str = 1) -> dict[str, list[int | str]]:
    """Each output's shape for an ``image_size`` input (``batch`` may be a symbolic name)."""
    h, w = image_size
    shapes: dict[str, list[int | str]] = {}
    for task in tasks:
        head = model.heads[task]
        kind = head.task
        if kind == "det":
            if nms:
                shapes[task] = [batch, head.max_detections, 6]
            else:
                n = sum((h // s) * (w // s) for s in head.strides)
                shapes[task] = [batch, n, 4 + head.num_classes]
        elif kind == "seg":
            shapes[task] = [batch, head.num_classes, h, w]
        elif kind in ("edge", "depth"):
            shapes[task] = [batch, 1, h, w]
        elif kind == "normals":
            shapes[task] = [batch, 3, h, w]
        elif kind == "cls":
            shapes[task] = [batch, head.num_classes]
    return shapes


def _batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float) -> Tensor:
    # torchvision's coordinate trick, written out: its batched_nms picks an implementation by
    # the number of boxes, a data-dependent branch that tracing would freeze. The padding zero
    # keeps the maximum defined when no box is left.
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes) * (top + 1)
    return nms(boxes + offsets[:, None], scores, iou)


class ExportModule(nn.Module):
    """``model`` as a function of a normalised float image batch [B, 3, H, W] returning a tuple
    of tensors, one per task of ``tasks`` (default: all), in the model's task order
    (``output_names``).

    ``nms=True`` puts the detection head's own selection into the graph (score threshold,
    per-level top-k, NMS per class, ``max_detections``), vectorised over the batch.
    """

    def __init__(self, model: MultiTaskModel, tasks: Sequence[str] | None = None,
                 nms: bool = False) -> None:
        super().__init__()
        tasks = list(tasks) if tasks is not None else model.task_names
        unknown = [t for t in tasks if t not in model.heads]
        if unknown:
            raise ExportError(f"unknown tasks {unknown}; the model has {model.task_names}")
        if not tasks:
            raise ExportError("no task to export")
        for task in tasks:
            kind = model.heads[task].task
            if kind not in KINDS:
                raise ExportError(f"cannot export head {task!r} ({type(model.heads[task]).__name__}"
                                  f", task {kind!r}): known tasks are {', '.join(KINDS)}")
            if kind == "det" and not isinstance(model.heads[task], FCOSHead):
                raise ExportError(f"cannot export detection head {type(model.heads[task]).__name__}"
                                  ": only FCOS heads are supported")
        if nms and not any(model.heads[t].task == "det" for t in tasks):
            raise ExportError("--nms needs a detection head, and the model has none")
        self.model = model
        self.tasks = [t for t in model.task_names if t in tasks]  # the model's order, always
        self.nms = bool(nms)

    @property
    def output_names(self) -> list[str]:
        return list(self.tasks)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        image_size = (images.shape[-2], images.shape[-1])
        raw = self.model(images, self.tasks)
        return tuple(self._output(t, raw[t], image_size) for t in self.tasks)

    def _output(self, task: str, out: Any, image_size: tuple[int, int]) -> Tensor:
        head = self.model.heads[task]
        kind = head.task
        if kind == "det":
            boxes, scores = head.dense_predictions(out, image_size)
            if self.nms:
                return self._select(head, boxes, scores, out["level_sizes"])
            return torch.cat([boxes, scores], dim=-1)
        if kind == "edge":
            return out["fuse"].float().sigmoid()
        if kind == "cls":
            logits = out.float()
            return logits.sigmoid() if head.multi_label else logits.softmax(dim=1)
        return out.float()  # seg logits, depth, normals: the head's forward output as is

    @staticmethod
    def _select(head: FCOSHead, boxes: Tensor, scores: Tensor,
                level_sizes: Sequence[int]) -> Tensor:
        """``FCOSHead.postprocess``'s selection for the whole batch at once: [B, max_det, 6]."""
        c = head.num_classes
        cand_boxes, cand_scores, cand_labels = [], [], []
        start = 0
        for size in level_sizes:
            level_scores = scores[:, start:start + size].reshape(scores.shape[0], size * c)
            # Top-k of all the level's scores, then the threshold: the same boxes as the head's
            # threshold-then-top-k, with a static k.
            top, idx = level_scores.topk(min(head.topk_candidates, size * c), dim=1)
            loc = idx // c
            cand_boxes.append(torch.gather(boxes[:, start:start + size], 1,
                                           loc[..., None].expand(-1, -1, 4)))
            cand_scores.append(top)
            cand_labels.append(idx % c)
            start += size
        box, score, label = (torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1),
                             torch.cat(cand_labels, 1))
        # Image index of each row from the data, not from a Python int, so that the batch
        # dimension stays dynamic in traced graphs.
        image_ids = torch.ones_like(score[:, 0], dtype=torch.long).cumsum(0) - 1  # [B]
        image = image_ids[:, None].expand_as(label)
        keep = ((score > head.score_thresh) & (box[..., 2] > box[..., 0])
                & (box[..., 3] > box[..., 1]))
        box, score, label, image = box[keep], score[keep], label[keep], image[keep]
        kept = _batched_nms(box, score, image * c + label, head.nms_thresh)  # by score, desc
        box, score, label, image = box[kept], score[kept], label[kept], image[kept]
        # Rank of each detection within its image; the first max_detections of each are kept.
        same = (image[:, None] == image_ids[None, :]).long()  # [K, B]
        rank = same.cumsum(0).gather(1, image[:, None])[:, 0] - 1
        fits = rank < head.max_detections
        slot = (image * head.max_detections + rank)[fits]
        rows = torch.cat([box, score[:, None], label[:, None].to(box)], dim=1)[fits]
        out = torch.zeros_like(scores[:, :1, :1]).repeat(1, head.max_detections, 6)
        flat = out.reshape(-1, 6).index_put((slot,), rows)
        return flat.reshape(-1, head.max_detections, 6)
