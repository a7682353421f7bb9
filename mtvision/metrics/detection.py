"""Object detection and instance masks: COCO box / mask AP computed with pycocotools (or
faster-coco-eval where installed: the same numbers, faster).

* :func:`coco_results` writes predictions in the COCO results format (xywh boxes, dataset
  category ids, masks as compressed RLE);
* :func:`coco_evaluate` scores such results against an original COCO annotation file (or its
  dict), so crowd regions and category ids are handled exactly as COCO does;
* :class:`DetectionMetric` accumulates in-memory predictions and targets during evaluation
  and scores them through the same pycocotools path.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mtvision.metrics.base import Metric, class_name_list, to_numpy

# COCOeval.summarize's 12 stats, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
# COCOeval implementations; pycocotools is the reference.
BACKENDS = ("pycocotools", "faster-coco-eval")


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2:] -= out[:, :2]
    return out


def encode_masks(masks: Any) -> list[dict[str, Any]]:
    """Compressed COCO RLEs (``counts`` as str, JSON-ready) of binary masks ``[K, H, W]``.

    bool / integer masks are foreground where non-zero; float masks where >= 0.5.
    """
    m = to_numpy(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [K, H, W], got shape {m.shape}")
    binary = m >= 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
    if binary.shape[0] == 0:
        return []
    # pycocotools wants column-major uint8 [H, W, K].
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _category_ids(cat_ids: Sequence[int] | None, num: int | None = None) -> list[int] | None:
    if cat_ids is None:
        return None
    ids = [int(c) for c in cat_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("cat_ids must be distinct")
    if num is not None and len(ids) != num:
        raise ValueError(f"{len(ids)} cat_ids for {num} classes")
    return ids


def _result_entries(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    rles: list[dict[str, Any]] | None, cat_ids: list[int] | None
                    ) -> list[dict[str, Any]]:
    n_cls = None if cat_ids is None else len(cat_ids)
    if labels.size and (labels.min() < 0 or (n_cls is not None and labels.max() >= n_cls)):
        raise ValueError(f"labels must lie in [0, {n_cls if n_cls is not None else 'inf'})")
    if not (len(boxes) == len(scores) == len(labels)) or (rles is not None
                                                          and len(rles) != len(labels)):
        raise ValueError(f"image {image_id}: boxes, scores, labels (and masks) differ in length")
    out = []
    for k, (box, score, label) in enumerate(zip(_xyxy_to_xywh(boxes), scores, labels,
                                                strict=True)):
        entry = {"image_id": int(image_id),
                 "category_id": int(label) + 1 if cat_ids is None else cat_ids[int(label)],
                 "bbox": [float(v) for v in box], "score": float(score)}
        if rles is not None:
            entry["segmentation"] = rles[k]
        out.append(entry)
    return out


def coco_results(preds: Sequence[dict[str, Any]], image_ids: Sequence[int],
                 cat_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Predictions in the COCO results format, one entry per detection.

    ``preds``: per image ``{"boxes" xyxy [N, 4], "scores" [N], "labels" [N]}`` in the pixels of
    the original image, optionally ``"masks"`` [N, H, W] (uint8 / bool); ``image_ids``: the
    COCO image id of each; ``cat_ids``: the category id of each contiguous label (``None``:
    label + 1). Entries have "image_id", "category_id", "bbox" (xywh), "score" and, with masks,
    "segmentation" (compressed RLE).
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} predictions but {len(image_ids)} image ids")
    ids = _category_ids(cat_ids)
    out: list[dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids, strict=True):
        rles = encode_masks(pred["masks"]) if pred.get("masks") is not None else None
        out += _result_entries(
            int(image_id), to_numpy(pred["boxes"]).reshape(-1, 4),
            to_numpy(pred["scores"]).reshape(-1), to_numpy(pred["labels"]).reshape(-1), rles, ids)
    return out


def _load_gt(gt: str | os.PathLike | dict[str, Any] | COCO) -> COCO:
    """A COCO object; dicts are deep-copied (COCOeval writes into the annotations)."""
    if isinstance(gt, COCO):
        return gt
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        if isinstance(gt, dict):
            coco = COCO()
            coco.dataset = copy.deepcopy(gt)
            coco.createIndex()
            return coco
        return COCO(os.fspath(gt))


def _has_gt(gt: COCO) -> dict[int, bool]:
    """Per category id: whether it has a non-crowd annotation (COCO scores only those)."""
    found = {c: False for c in gt.getCatIds()}
    for ann in gt.dataset.get("annotations", []):
        if not ann.get("iscrowd", 0):
            found[ann["category_id"]] = True
    return found


def _zero_scores(gt: COCO) -> dict[str, Any]:
    has_gt = _has_gt(gt)
    per_class = {gt.cats[c]["name"]: (0.0 if has_gt[c] else math.nan) for c in sorted(has_gt)}
    return {**{name: 0.0 for name in STAT_NAMES}, "per_class": per_class}


def default_backend() -> str:
    """``faster-coco-eval`` where installed (the same numbers as pycocotools, several times
    faster; the tests check they agree), else ``pycocotools``, the reference."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster-coco-eval"


def _run_cocoeval(gt: COCO, results: Sequence[dict[str, Any]], iou_type: str,
                  backend: str | None = None) -> dict[str, Any]:
    """The 12 stats by name (NaN where COCO says -1: nothing to score in that area range) and
    "per_class" AP@[.5:.95] by category name (NaN without ground truth); zeros without
    results or without ground truth. ``backend``: one of ``BACKENDS`` (None: the default)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou type '{iou_type}'; available: {', '.join(IOU_TYPES)}")
    # Only the fields the iou type uses, on fresh dicts (loadRes writes into them): without
    # "bbox", loadRes takes a segm result's area and box from its mask, not from the box.
    if iou_type == "bbox":
        dets = [{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in results]
    else:
        dets = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")}
                for r in results if "segmentation" in r]
    # pycocotools cannot load an empty result list; nothing detected (or nothing to detect)
    # scores 0.
    if not dets or not any(_has_gt(gt).values()):
        return _zero_scores(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend is None:
            backend = default_backend()
        if backend == "faster-coco-eval":
            from faster_coco_eval import COCO as FastCOCO
            from faster_coco_eval import COCOeval_faster

            fast_gt = FastCOCO(gt.dataset, use_deepcopy=True)
            ev = COCOeval_faster(fast_gt, fast_gt.loadRes(dets), iou_type)
        elif backend == "pycocotools":
            ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        else:
            raise ValueError(f"unknown COCO backend '{backend}'; available: {', '.join(BACKENDS)}")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {name: (float(v) if v > -1 else math.nan)
                           for name, v in zip(STAT_NAMES, ev.stats[:len(STAT_NAMES)],
                                              strict=True)}
    # precision[T iou, R recall, K class, A area, M maxDets]; -1 marks classes without gt.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        per_class[gt.cats[cat]["name"]] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
    out["per_class"] = per_class
    return out


def coco_evaluate(gt: str | os.PathLike | dict[str, Any], results: Sequence[dict[str, Any]],
                  iou_types: Iterable[str] = ("bbox",), backend: str | None = None
                  ) -> dict[str, dict[str, Any]]:
    """COCOeval of ``results`` (:func:`coco_results`) against the annotation file ``gt``.

    ``gt``: a COCO instances JSON path or its dict, as published (crowd regions, category ids
    and areas are used as they are). Returns per iou type ("bbox", "segm") the 12 standard
    stats by name (``STAT_NAMES``: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
    ARl; NaN where an area range has no ground truth) and "per_class": AP@[.5:.95] by
    category name (NaN for categories without non-crowd annotations). Empty results score 0.
    ``backend``: "pycocotools" or "faster-coco-eval" (None: :func:`default_backend`).
    """
    coco = _load_gt(gt)
    return {t: _run_cocoeval(coco, results, t, backend) for t in iou_types}


class DetectionMetric(Metric):
    """COCO box AP (and mask AP) over the dataset, computed by pycocotools.

    ``update`` takes per-image predictions ``{"boxes" xyxy, "scores", "labels"}`` (optionally
    ``"masks"`` [N, H, W]) and per-image targets ``{"boxes" xyxy, "labels"}`` with optionally
    ``"crowd_boxes"`` [M, 4] + ``"crowd_labels"`` [M] (COCO iscrowd regions: detections on them
    are neither true nor false positives), ``"masks"`` uint8 [K, H, W] and ``"crowd_masks"``
    [M, H, W]; coordinates in input pixels. ``compute`` gives "mAP" (AP@[.5:.95]), "mAP50",
    "mAP75", "mAP_small", "mAP_medium", "mAP_large" (NaN without ground truth in that range)
    and "per_class" {name: AP@[.5:.95]}; when every prediction and target carries masks also
    "mask_mAP", "mask_mAP50", "mask_mAP75". A class without ground truth has per-class AP NaN
    and is left out of the means; a dataset without any ground truth scores 0.

    ``cat_ids`` (optional) are the dataset's category ids of the contiguous labels; they only
    name the categories of the COCO objects built here (:meth:`coco_results` uses them).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 cat_ids: Sequence[int] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = class_name_list(class_names, num_classes)
        self.cat_ids = _category_ids(cat_ids, num_classes) or list(range(1, num_classes + 1))

    def _labels(self, x: Any) -> np.ndarray:
        labels = to_numpy(x).reshape(-1).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"ground-truth labels must lie in [0, {self.num_classes})")
        return labels

    def process(self, preds: list, targets: Any) -> None:
        for pred, target in zip(preds, targets, strict=True):
            # Masks are kept as RLE: a dataset's worth of [K, H, W] arrays would not fit.
            gt_masks = target.get("masks")
            crowd_masks = target.get("crowd_masks")
            pred_masks = pred.get("masks")
            shape = next((tuple(to_numpy(m).shape[-2:]) for m in (gt_masks, crowd_masks,
                                                                   pred_masks)
                          if m is not None), None)
            crowd_boxes = target.get("crowd_boxes")
            self.results.append({
                "gt_boxes": to_numpy(target["boxes"]).reshape(-1, 4).astype(np.float64),
                "gt_labels": self._labels(target["labels"]),
                "gt_rles": None if gt_masks is None else encode_masks(gt_masks),
                "crowd_boxes": (np.zeros((0, 4)) if crowd_boxes is None
                                else to_numpy(crowd_boxes).reshape(-1, 4).astype(np.float64)),
                "crowd_labels": self._labels(target.get("crowd_labels", [])),
                "crowd_rles": None if crowd_masks is None else encode_masks(crowd_masks),
                "shape": shape,
                "boxes": to_numpy(pred["boxes"]).reshape(-1, 4).astype(np.float64),
                "scores": to_numpy(pred["scores"]).reshape(-1).astype(np.float64),
                "labels": to_numpy(pred["labels"]).reshape(-1).astype(np.int64),
                "rles": None if pred_masks is None else encode_masks(pred_masks),
            })
            r = self.results[-1]
            for boxes, labels, rles, what in (
                    (r["gt_boxes"], r["gt_labels"], r["gt_rles"], "boxes / labels / masks"),
                    (r["crowd_boxes"], r["crowd_labels"], r["crowd_rles"], "crowd_*")):
                if len(boxes) != len(labels) or (rles is not None and len(rles) != len(labels)):
                    raise ValueError(f"target {what} differ in length")

    def coco_gt(self, results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The accumulated targets as a COCO instances dict (image ids 1..N in order seen)."""
        results = self.results if results is None else results
        images, annotations = [], []
        for img_id, r in enumerate(results, start=1):
            image: dict[str, Any] = {"id": img_id}
            if r["shape"] is not None:
                image["height"], image["width"] = r["shape"]
            images.append(image)
            groups = ((r["gt_boxes"], r["gt_labels"], r["gt_rles"], 0),
                      (r["crowd_boxes"], r["crowd_labels"], r["crowd_rles"], 1))
            for boxes, labels, rles, crowd in groups:
                for k, (box, label) in enumerate(zip(_xyxy_to_xywh(boxes), labels, strict=True)):
                    ann = {
                        # COCOeval treats annotation id 0 as "unmatched", so ids start at 1.
                        "id": len(annotations) + 1, "image_id": img_id,
                        "category_id": self.cat_ids[int(label)], "bbox": box.tolist(),
                        "area": float(box[2] * box[3]), "iscrowd": crowd,
                    }
                    if rles is not None:
                        # As in COCO, the area (which decides small / medium / large) is the
                        # mask's.
                        ann["segmentation"] = rles[k]
                        ann["area"] = float(mask_utils.area(rles[k]))
                    elif crowd and r["shape"] is not None:
                        # A crowd region given by its box only: its box is its mask.
                        h, w = r["shape"]
                        rle = mask_utils.frPyObjects(box[None].astype(np.float64), h, w)[0]
                        rle["counts"] = rle["counts"].decode("ascii")
                        ann["segmentation"] = rle
                    annotations.append(ann)
        categories = [{"id": c, "name": n}
                      for c, n in zip(self.cat_ids, self.class_names, strict=True)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def coco_results(self, results: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The accumulated predictions in the COCO results format (see :meth:`coco_gt`)."""
        results = self.results if results is None else results
        out: list[dict[str, Any]] = []
        for img_id, r in enumerate(results, start=1):
            keep = (r["labels"] >= 0) & (r["labels"] < self.num_classes)
            rles = None if r["rles"] is None else [m for m, k in zip(r["rles"], keep,
                                                                     strict=True) if k]
            out += _result_entries(img_id, r["boxes"][keep], r["scores"][keep],
                                   r["labels"][keep], rles, self.cat_ids)
        return out

    def compute_metrics(self, results: list[Any]) -> dict[str, Any]:
        gt = _load_gt(self.coco_gt(results))
        dets = self.coco_results(results)
        box = _run_cocoeval(gt, dets, "bbox")
        out: dict[str, Any] = {
            "mAP": box["AP"], "mAP50": box["AP50"], "mAP75": box["AP75"],
            "mAP_small": box["APs"], "mAP_medium": box["APm"], "mAP_large": box["APl"],
            "per_class": box["per_class"],
        }
        with_masks = bool(results) and all(
            r["rles"] is not None and r["gt_rles"] is not None
            and (r["crowd_rles"] is not None or r["shape"] is not None) for r in results)
        if with_masks:
            segm = _run_cocoeval(gt, dets, "segm")
            out.update({"mask_mAP": segm["AP"], "mask_mAP50": segm["AP50"],
                        "mask_mAP75": segm["AP75"]})
        return out
