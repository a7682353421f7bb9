"""Predictions of a trained checkpoint on raw images, in the images' own pixels.

    predictor = Predictor("runs/exp/best.pt")
    result = predictor.predict("street.jpg")
    result.boxes, result.semseg, result.cls, result.to_json(), result.plot()

Images are letterboxed to the training size (``config["data"]["image_size"]``) exactly as in
evaluation, and every prediction is mapped back: boxes through the inverse of the letterbox,
the segmentation by cropping the padding and a nearest resize, the edge map by cropping and a
bilinear resize.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from mtvision.data.io import read_image
from mtvision.data.transforms import (
    image_to_tensor,
    letterbox,
    letterbox_params,
    normalize_images,
    unletterbox,
)
from mtvision.engine.checkpoint import load_checkpoint, load_weights
from mtvision.engine.device import resolve_device
from mtvision.inference.drawing import draw_predictions
from mtvision.inference.sources import InferenceError
from mtvision.models import build_model
from mtvision.registry import ConfigError

# A path (str or os.PathLike), an RGB uint8 numpy array or a PIL image.
ImageInput = Any


class Letterbox(NamedTuple):
    """Where an original image sits inside the model input."""

    orig_size: tuple[int, int]  # (h, w) of the original
    scale: float
    resized: tuple[int, int]  # (h, w) of the image inside the padding
    pad: tuple[int, int]  # (pad_left, pad_top)


@dataclass
class Result:
    """One image's predictions in original pixels; tasks the model lacks are ``None``.

    ``boxes`` float32[K, 4] xyxy, ``scores`` float32[K], ``labels`` int64[K], ``class_names``
    list[str] (K); ``semseg`` uint8[H, W] class ids; ``edge`` float32[H, W] in [0, 1];
    ``cls`` ``{"label", "name", "score", "probs"}`` (+ ``"labels"``, ``"names"`` when
    multi-label); ``depth`` float32[H, W] in the training data's depth unit; ``normals``
    float32[H, W, 3] unit vectors; ``orig_size`` (H, W).
    """

    orig_size: tuple[int, int]
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    semseg: np.ndarray | None = None
    edge: np.ndarray | None = None
    cls: dict[str, Any] | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    name: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    classes: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def prediction(self) -> dict[str, Any]:
        """The predictions in the per-task format of ``mtvision.models.heads.base``."""
        pred: dict[str, Any] = {}
        if self.boxes is not None:
            pred["det"] = {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}
        if self.semseg is not None:
            pred["seg"] = self.semseg
        if self.edge is not None:
            pred["edge"] = self.edge
        if self.cls is not None:
            pred["cls"] = self.cls
        if self.depth is not None:
            pred["depth"] = self.depth
        if self.normals is not None:
            pred["normals"] = self.normals
        return pred

    def to_json(self) -> dict[str, Any]:
        """Plain Python types: sizes, detections, image class, segmentation classes present."""
        h, w = self.orig_size
        out: dict[str, Any] = {"height": int(h), "width": int(w)}
        if self.name is not None:
            out["name"] = self.name
        if self.boxes is not None:
            out["detections"] = [
                {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
                 "label": int(label), "class": name}
                for box, score, label, name in zip(self.boxes, self.scores, self.labels,
                                                   self.class_names, strict=True)
            ]
        if self.cls is not None:
            cls = {k: v for k, v in self.cls.items() if k != "probs"}
            cls["score"] = round(float(cls["score"]), 4)
            cls["probs"] = [round(float(p), 4) for p in self.cls["probs"]]
            out["cls"] = cls
        if self.semseg is not None:
            ids, counts = np.unique(self.semseg, return_counts=True)
            names = self.classes.get("seg")
            out["seg_classes"] = [
                {"label": int(i), "class": _name(names, int(i)),
                 "fraction": round(float(c) / self.semseg.size, 4)}
                for i, c in zip(ids, counts, strict=True)
            ]
        if self.depth is not None:
            out["depth_stats"] = {k: round(float(f(self.depth)), 4)
                            for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean))}
        return out

    def plot(self, **kwargs: Any) -> np.ndarray:
        """The original image with the predictions drawn (see ``draw_predictions``).

        Depth and normals are not drawn over the photo; they are saved as their own images.
        """
        if self.image is None:
            raise ValueError("this Result holds no image to draw on")
        return draw_predictions(self.image, self.prediction(), self.classes, **kwargs)


def _name(names: list[str] | None, label: int) -> str:
    return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)


def to_rgb(x: ImageInput) -> np.ndarray:
    """A path, numpy image (RGB, grey or RGBA) or PIL image as an RGB uint8 (H, W, 3) array."""
    if isinstance(x, (str, os.PathLike)):
        return read_image(x)
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8, got {x.dtype}")
        if x.ndim == 2:
            return cv2.cvtColor(x, cv2.COLOR_GRAY2RGB)
        if x.ndim == 3 and x.shape[2] == 3:
            return x
        if x.ndim == 3 and x.shape[2] == 4:
            return np.ascontiguousarray(x[:, :, :3])
        raise ValueError(f"numpy images must be (H, W), (H, W, 3) or (H, W, 4), got {x.shape}")
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL, without importing it eagerly
        return np.asarray(x.convert("RGB"))
    raise TypeError(f"cannot use a {type(x).__name__} as an image "
                    "(expected a path, a numpy array or a PIL image)")


class Predictor:
    """A checkpoint's model, ready to predict on images of any size.

    ``device``: "auto" (cuda when available), "cpu", "cuda", "cuda:1"... ``score_thresh`` and
    ``iou_thresh`` override the detection head's score threshold and NMS IoU (lower the score
    threshold to see weak detections). ``image_size`` (H, W) overrides the training input size
    (a multiple of the backbone's largest stride); ``tasks`` runs a subset of the heads;
    ``half`` runs in float16 (CUDA only).
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto",
                 score_thresh: float | None = None, iou_thresh: float | None = None,
                 image_size: tuple[int, int] | None = None, tasks: list[str] | None = None,
                 half: bool = False) -> None:
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise InferenceError(f"half precision needs a CUDA device, got {self.device}; "
                                 "drop --half or pass --device cuda")
        state = load_checkpoint(self.checkpoint, map_location="cpu")
        config = state["config"]
        try:
            size = config["data"]["image_size"]
            self.image_size = (int(size[0]), int(size[1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise InferenceError(
                f"{self.checkpoint}: config has no valid data.image_size [H, W]") from None
        try:
            model = build_model(config["model"])
        except (ConfigError, KeyError, TypeError) as e:
            raise InferenceError(
                f"{self.checkpoint}: cannot build the model from its config: {e}") from None
        load_weights(model, state, self.checkpoint)  # strict; one line naming the differences
        self.max_stride = model.max_stride
        if image_size is not None:
            self.image_size = self._check_size(image_size)
        if tasks is not None:
            unknown = [t for t in tasks if t not in model.heads]
            if unknown or not tasks:
                raise InferenceError(f"{self.checkpoint}: the model has no head for task(s) "
                                     f"{', '.join(unknown) or '(none given)'}; its heads are "
                                     f"{', '.join(model.heads)}")
        self.tasks = [t for t in model.heads if tasks is None or t in tasks]
        self.half = half
        self.model = model.to(self.device).eval()
        if half:
            self.model.half()
        self.config = config
        self.classes: dict[str, list[str]] = {
            t: list(v) for t, v in (state.get("classes") or {}).items() if v is not None}
        self.score_thresh = score_thresh
        head = self.model.heads["det"] if "det" in self.model.heads else None
        # The head thresholds before top-k and NMS; setting it there (not only filtering
        # afterwards) is what lets a lower threshold bring back weaker boxes.
        if score_thresh is not None and head is not None and hasattr(head, "score_thresh"):
            head.score_thresh = float(score_thresh)
        if iou_thresh is not None and head is not None and hasattr(head, "nms_thresh"):
            if not 0.0 < iou_thresh <= 1.0:
                raise InferenceError(f"the NMS IoU threshold must be in (0, 1], got {iou_thresh}")
            head.nms_thresh = float(iou_thresh)

    def _check_size(self, size: tuple[int, int] | list[int] | int) -> tuple[int, int]:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
        s = self.max_stride
        if h <= 0 or w <= 0 or h % s or w % s:
            raise InferenceError(f"input size {h}x{w} must be positive multiples of the "
                                 f"model's largest stride {s} (e.g. {max(s, round(h / s) * s)}x"
                                 f"{max(s, round(w / s) * s)})")
        return h, w

    @property
    def task_names(self) -> list[str]:
        """The tasks this predictor runs (the model's, or the subset asked for)."""
        return list(self.tasks)

    def preprocess(self, images: list[np.ndarray]) -> tuple[Tensor, list[Letterbox]]:
        """Letterbox and normalise RGB uint8 images into one batch on the device."""
        tensors, boxes = [], []
        for image in images:
            padded, scale, pad = letterbox(image, self.image_size)
            _, resized, _ = letterbox_params(image.shape[:2], self.image_size)
            tensors.append(image_to_tensor(padded))
            boxes.append(Letterbox((image.shape[0], image.shape[1]), scale, resized, pad))
        batch = normalize_images(torch.stack(tensors).to(self.device, non_blocking=True))
        return (batch.half() if self.half else batch), boxes

    def infer(self, batch: Tensor) -> dict[str, list]:
        """Raw per-task predictions in model-input pixels (the model's own post-processing)."""
        preds = self.model.predict(batch, self.tasks)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so that timings cover the GPU work
        return preds

    def postprocess(self, preds: dict[str, list], boxes: list[Letterbox],
                    images: list[np.ndarray] | None = None,
                    names: list[str | None] | None = None) -> list[Result]:
        """Map the predictions of each image back to its original pixels."""
        results = []
        for i, lb in enumerate(boxes):
            result = Result(orig_size=lb.orig_size, classes=self.classes,
                            image=images[i] if images is not None else None,
                            name=names[i] if names is not None else None)
            if "det" in preds:
                self._det(result, preds["det"][i], lb)
            if "seg" in preds:
                seg = _numpy(preds["seg"][i])
                seg = seg.astype(np.uint8 if seg.max(initial=0) < 256 else np.uint16)
                result.semseg = unletterbox(seg, lb.orig_size, self.image_size,
                                            cv2.INTER_NEAREST_EXACT)
            if "edge" in preds:
                edge = _numpy(preds["edge"][i]).astype(np.float32)
                result.edge = np.clip(unletterbox(edge, lb.orig_size, self.image_size), 0.0, 1.0)
            if "cls" in preds:
                result.cls = self._cls(preds["cls"][i])
            if "depth" in preds:
                depth = _numpy(preds["depth"][i]).astype(np.float32)
                result.depth = unletterbox(depth, lb.orig_size, self.image_size)
            if "normals" in preds:
                normals = _numpy(preds["normals"][i]).astype(np.float32).transpose(1, 2, 0)
                normals = unletterbox(np.ascontiguousarray(normals), lb.orig_size,
                                      self.image_size)
                # Interpolation shortens the vectors between differing normals.
                norm = np.linalg.norm(normals, axis=2, keepdims=True)
                result.normals = normals / np.maximum(norm, 1e-6)
            results.append(result)
        return results

    def _det(self, result: Result, det: dict[str, Tensor], lb: Letterbox) -> None:
        boxes = det["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        scores = det["scores"].detach().float().cpu().numpy().reshape(-1)
        labels = det["labels"].detach().cpu().numpy().reshape(-1).astype(np.int64)
        h, w = lb.orig_size
        pad_left, pad_top = lb.pad
        boxes = boxes.copy()
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_left) / lb.scale).clip(0, w)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_top) / lb.scale).clip(0, h)
        # Boxes wholly in the padding collapse to nothing once clipped to the image.
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if self.score_thresh is not None:
            keep &= scores >= self.score_thresh
        result.boxes = boxes[keep].astype(np.float32)
        result.scores = scores[keep].astype(np.float32)
        result.labels = labels[keep]
        names = self.classes.get("det")
        result.class_names = [_name(names, int(k)) for k in result.labels]

    def _cls(self, cls: dict[str, Any]) -> dict[str, Any]:
        names = self.classes.get("cls")
        probs = cls["probs"]
        probs = probs.detach().float().cpu().numpy() if hasattr(probs, "detach") else probs
        out = {"label": int(cls["label"]), "name": _name(names, int(cls["label"])),
               "score": float(cls["score"]), "probs": np.asarray(probs, np.float32)}
        if "labels" in cls:
            out["labels"] = [int(k) for k in cls["labels"]]
            out["names"] = [_name(names, int(k)) for k in cls["labels"]]
        return out

    def predict(self, x: ImageInput | list[ImageInput],
                batch_size: int = 8) -> Result | list[Result]:
        """Predict on one image (-> Result) or a list of images (-> list of Result).

        Images are paths, RGB numpy arrays or PIL images; a list runs in batches of
        ``batch_size``.
        """
        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        results: list[Result] = []
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start:start + max(1, batch_size)]
            images = [to_rgb(item) for item in chunk]
            names = [Path(item).stem if isinstance(item, (str, os.PathLike)) else None
                     for item in chunk]
            batch, boxes = self.preprocess(images)
            results.extend(self.postprocess(self.infer(batch), boxes, images, names))
        return results[0] if single else results


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
