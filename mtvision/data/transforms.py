"""Joint image / box / mask transforms built on albumentations.

``build_transforms(ops, image_size, train)`` gives a callable that applies the user's
augmentations (training only), then always letterboxes to ``image_size`` and normalises with the
ImageNet statistics. Boxes, the segmentation mask and the edge map go through the same
albumentations ``Compose`` call, so every geometric op moves them together.

Letterbox geometry (shared with ``letterbox``, which inference uses to map predictions back):
the image is scaled by ``scale = min(H / h, W / w)`` to ``(round(h * scale), round(w * scale))``
(at least 1 px each) and padded centred, ``pad_top = (H - new_h) // 2`` and
``pad_left = (W - new_w) // 2``; a point ``x`` of the original lands at ``x * scale + pad_left``
(exact up to the rounding of the resized size, under half a pixel). Image padding is 0 (before
normalisation), mask padding is 255 = ignore.

Boxes that leave the image: boxes are clipped to the image (``clip=True``) before the pipeline
and after every op; a box is dropped when less than ``min_visibility`` of its area (default 0.3)
is left in the image after the ops, or when it ends up narrower or shorter than
``min_box_size`` pixels (default 1), or is degenerate (zero width or height) to begin with.
Crowd boxes (COCO ``iscrowd`` regions, kept for evaluation) follow the same rule. Instance masks
stay aligned with the boxes that survive.
Masks that user ops push out of the image are filled with the op's ``fill_mask`` (albumentations'
default is 0 = background; pass ``fill_mask: 255`` to rotations/affines to mark them ignored).

Depth and surface normals ride through the same call as float maps (resized with nearest
neighbour, so no depth is invented across an object's border). Pixels that did not come from the
image (letterbox padding, or what a user op fills in) become invalid: depth 0, normals the zero
vector. Normals are direction vectors ``(x, y, z)`` with x along the image columns and y along
the rows: a horizontal flip negates x, a vertical flip negates y (whichever way the dataset's y
axis points). Ops that rotate or shear the image would have to rotate the vectors too, which
needs the dataset's axis convention; they are refused with an error when a sample has normals.

Randomness: albumentations 2.x ignores ``np.random.seed`` / ``random.seed``; its ``Compose`` keeps
its own generator. The pipeline reseeds it from ``torch.initial_seed()`` on its first call in
every process, so augmentations are repeatable when torch is seeded, and DataLoader workers
(which each get a distinct torch seed) do not all draw the same augmentations.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor

from mtvision.registry import ConfigError, closest

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

MASK_IGNORE = 255


class TransformResult(NamedTuple):
    """Output of a transform pipeline (its first four fields: ``image, boxes, labels, masks``)."""

    image: Tensor  # uint8 [3, H, W] (normalised on the device: normalize_images)
    boxes: np.ndarray  # float32 [K, 4] xyxy in output pixels
    labels: np.ndarray  # int64 [K]
    masks: dict[str, np.ndarray]  # name -> uint8 [H, W]
    crowd: np.ndarray | None = None  # bool [K]: the box is an iscrowd region
    instance_masks: np.ndarray | None = None  # uint8 [K, H, W], one per kept box
    depth: np.ndarray | None = None  # float32 [H, W], 0 = invalid
    normals: np.ndarray | None = None  # float32 [H, W, 3], zero vector = invalid


# Ops whose applied parameters carry an affine ``matrix``; anything but a diagonal (scale or
# flip) part rotates or shears, which surface normals cannot follow without an axis convention.
_FLIP_AXIS = {"HorizontalFlip": 0, "VerticalFlip": 1}


def _orient_normals(normals: np.ndarray, applied: list[tuple[str, dict[str, Any]]]) -> np.ndarray:
    """Turn the normal vectors as the applied ops turned the image."""
    sign = np.ones(2, np.float32)
    for name, params in applied:
        if name in _FLIP_AXIS:
            sign[_FLIP_AXIS[name]] *= -1
            continue
        matrix = params.get("matrix")
        if matrix is not None:
            lin = np.asarray(matrix, np.float64)[:2, :2]
            if abs(lin[0, 1]) > 1e-9 or abs(lin[1, 0]) > 1e-9:
                raise ValueError(f"transform {name} rotates or shears the image; surface "
                                 "normals cannot follow it (use flips, crops and scaling)")
            sign *= np.sign(np.diag(lin)).astype(np.float32)
        elif name in ("Transpose", "RandomRotate90", "D4", "Rotate", "SafeRotate"):
            raise ValueError(f"transform {name} rotates the image; surface normals cannot "
                             "follow it (use flips, crops and scaling)")
    if (sign == 1).all():
        return normals
    out = normals.copy()
    out[..., :2] *= sign
    return out


def _transform_names() -> list[str]:
    return [n for n in dir(A) if isinstance(getattr(A, n), type)
            and issubclass(getattr(A, n), A.BasicTransform)]


def _one_line_error(e: BaseException) -> str:
    # albumentations wraps pydantic's multi-line ValidationError in a ValueError; report one
    # "field: message (got value)" per bad field instead.
    for err in (e, e.__cause__, e.__context__):
        errors = getattr(err, "errors", None)
        if not callable(errors):
            continue
        try:
            fields: dict[str, str] = {}
            for item in errors():
                loc = item.get("loc") or ("?",)
                fields.setdefault(str(loc[0]), f"{item.get('msg', '')} (got {item.get('input')!r})")
            if fields:
                return "; ".join(f"{k}: {v}" for k, v in fields.items())
        except Exception:  # noqa: BLE001 - fall back to the plain message
            break
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def build_op(spec: dict[str, Any], where: str = "transforms") -> A.BasicTransform:
    """Build one albumentations transform from ``{"name": ..., **options}``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"'{where}' entries must be dicts with a 'name', got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    cls = getattr(A, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        raise ConfigError(
            f"unknown transform '{name}' in {where}{closest(str(name), _transform_names())}; "
            "expected an albumentations transform name such as 'HorizontalFlip'"
        )
    # albumentations only warns about unknown keyword options, so check them here.
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [n for n in params if n != "self"]
        for key in options:
            if key not in valid:
                raise ConfigError(
                    f"unknown option '{key}' for transform '{name}' in {where}"
                    f"{closest(key, valid)}; "
                    f"valid: {', '.join(valid)}"
                )
    try:
        return cls(**options)
    except Exception as e:  # noqa: BLE001 - any constructor failure is a config problem
        raise ConfigError(
            f"bad options for transform '{name}' in {where}: {_one_line_error(e)}"
        ) from None


def letterbox_params(orig_hw: tuple[int, int], size: tuple[int, int]
                     ) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """``(scale, (new_h, new_w), (pad_left, pad_top))`` of the letterbox, as albumentations does it.

    Mirrors ``A.LongestMaxSize(max_size_hw=size)`` (Python ``round`` of ``side * scale``) and
    ``A.PadIfNeeded(position="center")`` (``int(diff / 2)`` before); ``test_transforms`` checks
    the two agree.
    """
    h, w = orig_hw
    out_h, out_w = size
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    pad_top = int((out_h - new_h) / 2.0) if new_h < out_h else 0
    pad_left = int((out_w - new_w) / 2.0) if new_w < out_w else 0
    return scale, (new_h, new_w), (pad_left, pad_top)


def _as_hw(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be (height, width) >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _letterbox_ops(size: tuple[int, int]) -> list[A.BasicTransform]:
    h, w = size
    return [
        A.LongestMaxSize(max_size_hw=(h, w), interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=cv2.INTER_NEAREST),
        A.PadIfNeeded(min_height=h, min_width=w, position="center",
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=MASK_IGNORE),
    ]


def letterbox(image: np.ndarray, size: tuple[int, int] | int
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad centred to ``size = (H, W)``.

    Returns ``(padded_image, scale, (pad_left, pad_top))`` with the same geometry as the
    training/eval pipeline: original ``(x, y)`` maps to ``(x * scale + pad_left,
    y * scale + pad_top)``, so predictions map back with ``(x - pad_left) / scale``.
    """
    hw = _as_hw(size)
    out = _letterbox_compose(hw)(image=image)["image"]
    scale, _, pad = letterbox_params(image.shape[:2], hw)
    return out, scale, pad


def unletterbox(x: np.ndarray, orig_hw: tuple[int, int], size: tuple[int, int] | int,
                interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A map predicted on the letterboxed input, cropped to the image and resized back to
    ``orig_hw`` (the inverse of ``letterbox`` for dense outputs: seg, edge, depth)."""
    _, (new_h, new_w), (pad_left, pad_top) = letterbox_params(orig_hw, _as_hw(size))
    crop = np.ascontiguousarray(np.asarray(x)[pad_top:pad_top + new_h, pad_left:pad_left + new_w])
    h, w = orig_hw
    if crop.shape[:2] == (h, w):
        return crop
    return cv2.resize(crop, (w, h), interpolation=interpolation)


@functools.lru_cache(maxsize=16)
def unletterbox_maps(x: torch.Tensor, orig_hw: tuple[int, int], size: tuple[int, int] | int
                     ) -> torch.Tensor:
    """``unletterbox`` for maps ``[C, H, W]`` in torch (on their device): the letterbox's
    image area, resized bilinearly (half-pixel centres, as ``cv2.INTER_LINEAR``) to
    ``orig_hw``; float[C, h, w]."""
    _, (new_h, new_w), (pad_left, pad_top) = letterbox_params(orig_hw, _as_hw(size))
    crop = x[..., pad_top:pad_top + new_h, pad_left:pad_left + new_w].float()
    if tuple(crop.shape[-2:]) == tuple(orig_hw):
        return crop
    return torch.nn.functional.interpolate(crop[None], size=tuple(orig_hw), mode="bilinear",
                                           align_corners=False)[0]


def _letterbox_compose(size: tuple[int, int]) -> A.Compose:
    return A.Compose(_letterbox_ops(size))


def image_to_tensor(image: np.ndarray) -> Tensor:
    """uint8 ``H x W x 3`` RGB -> uint8 ``[3, H, W]``.

    Images stay uint8 until they are on the device (``normalize_images``): a quarter of the
    bytes through the loader's workers, pinned memory and the host-to-device copy."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1)))


_NORM: dict[torch.device, tuple[Tensor, Tensor]] = {}


def normalize_images(images: Tensor) -> Tensor:
    """uint8 images ``[..., 3, H, W]`` -> float32 normalised with the ImageNet statistics, on
    their own device; float images are taken as already normalised and returned as they are."""
    if images.dtype != torch.uint8:
        return images
    if images.device not in _NORM:  # once per device: no host-to-device copy per batch
        shape = (3, 1, 1)
        _NORM[images.device] = (
            torch.tensor(IMAGENET_MEAN, device=images.device).mul_(255.0).view(shape),
            torch.tensor(IMAGENET_STD, device=images.device).mul_(255.0).reciprocal_().view(shape))
    mean, inv_std = _NORM[images.device]
    return (images.float() - mean) * inv_std


class Transforms:
    """Callable ``(image, boxes, labels, masks) -> TransformResult``; see ``build_transforms``."""

    def __init__(self, user_ops: list[A.BasicTransform], image_size: tuple[int, int],
                 min_visibility: float, min_box_size: float) -> None:
        self.image_size = image_size
        self.user_ops = user_ops
        self.compose = A.Compose(
            [*user_ops, *_letterbox_ops(self.image_size)],
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["labels", "box_index"],
                min_visibility=min_visibility,
                min_width=min_box_size, min_height=min_box_size, clip=True,
                filter_invalid_bboxes=True,
            ),
            additional_targets={"dense": "mask"},
            save_applied_params=True,
        )
        self._seeded_pid: int | None = None

    def reseed(self, seed: int) -> None:
        """Fix the random draws of the next call (datasets seed per sample and epoch)."""
        self.compose.set_random_seed(seed % 2**32)
        self._seeded_pid = os.getpid()

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None,
                 labels: np.ndarray | None = None,
                 masks: dict[str, np.ndarray] | None = None, *,
                 crowd: np.ndarray | None = None, instance_masks: np.ndarray | None = None,
                 depth: np.ndarray | None = None,
                 normals: np.ndarray | None = None) -> TransformResult:
        """Transform one sample; every given target comes back moved with the image.

        ``crowd`` (bool[K]) flags boxes that are iscrowd regions; ``instance_masks`` (uint8
        [K, H, W]) are the boxes' masks; ``depth`` float[H, W] and ``normals`` float[H, W, 3].
        """
        if self._seeded_pid != os.getpid():
            # A forked worker inherits the parent's generator state: reseed per process.
            self.compose.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_pid = os.getpid()
        h, w = image.shape[:2]
        boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
        boxes = boxes.reshape(-1, 4)
        labels = (np.zeros((0,), np.int64) if labels is None
                  else np.asarray(labels, np.int64).reshape(-1))
        if len(labels) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
        crowd_in = (np.zeros(len(boxes), bool) if crowd is None
                    else np.asarray(crowd, bool).reshape(-1))
        if len(crowd_in) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(crowd_in)} crowd flags")
        if instance_masks is not None and len(instance_masks) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(instance_masks)} instance masks")
        # Clip and drop degenerate boxes up front: albumentations rejects x_max <= x_min.
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        # Each box carries its index, so its crowd flag and instance mask follow it.
        index = np.flatnonzero(keep)
        boxes, labels = boxes[keep], labels[keep]

        names = list(masks or {})
        for n in names:
            if masks[n].shape[:2] != (h, w):
                raise ValueError(f"mask '{n}' is {masks[n].shape[:2]}, image is {(h, w)}")
        # One "masks" list rather than named targets, so any mask names work; all masks
        # share the ignore padding.
        mask_list = [np.ascontiguousarray(masks[n], dtype=np.uint8) for n in names]
        n_inst = 0
        if instance_masks is not None and len(index):
            inst = np.asarray(instance_masks, np.uint8)[index]
            mask_list += list(inst)
            n_inst = len(inst)
        floats: list[np.ndarray] = []
        if depth is not None:
            floats.append(np.asarray(depth, np.float32)[..., None])
        if normals is not None:
            floats.append(np.asarray(normals, np.float32).reshape(h, w, 3))
        if floats:
            for f in floats:
                if f.shape[:2] != (h, w):
                    raise ValueError(f"depth/normals map is {f.shape[:2]}, image is {(h, w)}")
            # Ones mark real pixels: letterbox padding (255) and user fills (0) both differ.
            mask_list.append(np.ones((h, w), np.uint8))
        data: dict[str, Any] = {"image": image, "bboxes": boxes, "labels": labels,
                                "box_index": index}
        if mask_list:
            data["masks"] = mask_list
        if floats:
            data["dense"] = np.concatenate(floats, axis=2)
        out = self.compose(**data)
        out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], np.int64).reshape(-1)
        kept = np.asarray(out["box_index"], np.int64).reshape(-1)
        out_list = list(out.get("masks", []))
        out_masks = {n: np.asarray(m, np.uint8) for n, m in zip(names, out_list, strict=False)}
        result: dict[str, Any] = {"crowd": crowd_in[kept]}
        if instance_masks is not None:
            oh, ow = out["image"].shape[:2]
            inst_out = out_list[len(names):len(names) + n_inst]
            # Position among the boxes that entered the pipeline -> the instance mask slot.
            slot = {int(i): k for k, i in enumerate(index)}
            # == 1: the letterbox pads masks with 255, which is not part of any instance.
            result["instance_masks"] = (np.stack([np.asarray(inst_out[slot[int(i)]]) == 1
                                                  for i in kept]).astype(np.uint8)
                                        if len(kept) else np.zeros((0, oh, ow), np.uint8))
        if floats:
            valid = np.asarray(out_list[-1]) == 1
            dense = np.asarray(out["dense"], np.float32) * valid[..., None]
            c = 0
            if depth is not None:
                result["depth"] = np.ascontiguousarray(dense[..., 0])
                c = 1
            if normals is not None:
                result["normals"] = _orient_normals(np.ascontiguousarray(dense[..., c:c + 3]),
                                                    out.get("applied_transforms", []))
        return TransformResult(image_to_tensor(out["image"]), out_boxes, out_labels, out_masks,
                               **result)


def build_transforms(ops: Sequence[dict[str, Any]] | None, image_size: tuple[int, int] | int,
                     train: bool, *, min_visibility: float = 0.3,
                     min_box_size: float = 1.0, where: str = "transforms") -> Transforms:
    """Build the pipeline: user ``ops`` (only when ``train``), letterbox to ``image_size``
    ``(H, W)`` (an int means square), ImageNet normalisation.

    ``ops`` is a list like ``[{"name": "HorizontalFlip", "p": 0.5}]``; each entry becomes
    ``getattr(albumentations, name)(**options)``. The ops are validated even when ``train`` is
    False, so a config error shows up on the first run whatever the mode.
    """
    image_size = _as_hw(image_size)
    if ops is not None and not isinstance(ops, (list, tuple)):
        raise ConfigError(f"'transforms' must be a list of {{name: ...}} dicts, got {ops!r}")
    # ``where`` names the list in error messages (e.g. the config key it came from).
    user_ops = [build_op(spec, f"{where}[{i}]") for i, spec in enumerate(ops or [])]
    return Transforms(user_ops if train else [], image_size, min_visibility, min_box_size)
