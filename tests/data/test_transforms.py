"""Transforms: boxes and masks move with the image, letterbox geometry, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtvision.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transforms,
    image_to_tensor,
    letterbox,
    letterbox_params,
    normalize_images,
)
from mtvision.registry import ConfigError


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_horizontal_flip_keeps_boxes_and_masks_consistent() -> None:
    h, w = 40, 60
    image = _image(h, w)
    seg = np.zeros((h, w), np.uint8)
    seg[10:20, 5:15] = 3  # the object of the box below
    edge = np.zeros((h, w), np.uint8)
    edge[10, 5:15] = 1
    t = build_transforms([{"name": "HorizontalFlip", "p": 1.0}], (h, w), train=True)
    out = t(image, np.array([[5, 10, 15, 20]]), np.array([2]), {"seg": seg, "edge": edge})

    # Hand-computed: x -> w - x, so [5, 15] becomes [45, 55].
    np.testing.assert_allclose(out.boxes, [[45, 10, 55, 20]])
    assert out.boxes.dtype == np.float32 and out.labels.dtype == np.int64
    assert out.labels.tolist() == [2]
    np.testing.assert_array_equal(out.masks["seg"], seg[:, ::-1])
    np.testing.assert_array_equal(out.masks["edge"], edge[:, ::-1])
    ys, xs = np.nonzero(out.masks["seg"] == 3)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == out.boxes[0].tolist()
    torch.testing.assert_close(out.image, image_to_tensor(np.ascontiguousarray(image[:, ::-1])))


def test_eval_mode_ignores_user_ops() -> None:
    image = _image(40, 60)
    t = build_transforms([{"name": "HorizontalFlip", "p": 1.0}], (40, 60), train=False)
    out = t(image, np.array([[5, 10, 15, 20]]), np.array([0]), {})
    np.testing.assert_allclose(out.boxes, [[5, 10, 15, 20]])
    torch.testing.assert_close(out.image, image_to_tensor(image))
    assert out.masks == {}


def test_normalisation_happens_on_the_device() -> None:
    # Samples stay uint8 (a quarter of the bytes through workers and the copy to the GPU);
    # normalize_images turns them into the ImageNet-normalised floats the model takes.
    image = np.full((4, 5, 3), 200, np.uint8)
    image[0, 0] = (0, 128, 255)
    x = build_transforms(None, (4, 5), train=False)(image).image
    assert x.shape == (3, 4, 5) and x.dtype == torch.uint8
    torch.testing.assert_close(x, torch.from_numpy(image).permute(2, 0, 1))
    y = normalize_images(x[None])
    assert y.dtype == torch.float32 and y.shape == (1, 3, 4, 5)
    for (r, c), rgb in (((0, 0), (0, 128, 255)), ((3, 4), (200, 200, 200))):
        expected = [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD,
                                                          strict=True)]
        torch.testing.assert_close(y[0, :, r, c], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert normalize_images(y) is y  # float images are already normalised


@pytest.mark.parametrize("orig, size", [
    ((50, 80), (64, 96)), ((81, 37), (64, 64)), ((100, 100), (48, 80)),
    ((33, 70), (128, 128)), ((64, 64), (64, 64)), ((7, 100), (64, 64)),
])
def test_letterbox_matches_pipeline(orig: tuple[int, int], size: tuple[int, int]) -> None:
    h, w = orig
    image = _image(h, w, seed=h * w)
    box = np.array([[0.0, 0.0, w, h], [w * 0.25, h * 0.5, w * 0.75, h * 0.9]], np.float32)
    ones = np.ones((h, w), np.uint8)
    out = build_transforms(None, size, train=False)(image, box, np.array([0, 1]), {"m": ones})
    padded, scale, (pad_left, pad_top) = letterbox(image, size)

    assert padded.shape == (*size, 3) and padded.dtype == np.uint8
    torch.testing.assert_close(out.image, image_to_tensor(padded))
    # The same point mapping, up to the rounding of the resized size (< 0.5 px).
    mapped = box * scale + np.array([pad_left, pad_top, pad_left, pad_top])
    np.testing.assert_allclose(out.boxes, mapped, atol=0.5)
    # The content sits exactly where letterbox_params says; the rest is padding (255 in masks).
    _, (new_h, new_w), _ = letterbox_params((h, w), size)
    expected = np.full(size, 255, np.uint8)
    expected[pad_top:pad_top + new_h, pad_left:pad_left + new_w] = 1
    np.testing.assert_array_equal(out.masks["m"], expected)
    assert (padded[expected == 255] == 0).all()
    # Predictions map back to original pixels.
    back = (out.boxes - np.array([pad_left, pad_top, pad_left, pad_top])) / scale
    np.testing.assert_allclose(back, box, atol=0.5 / scale + 1e-4)


def test_boxes_leaving_the_image() -> None:
    h, w = 40, 60
    image = _image(h, w)
    boxes = np.array([
        [-10, 5, 10, 15],  # partly outside the input: clipped to [0, 5, 10, 15]
        [70, 5, 80, 15],  # fully outside: dropped
        [30, 30, 30, 35],  # degenerate: dropped
        [20, 0, 40, 10],  # half visible after the crop below: clipped, kept
        [25, 20, 45, 30],  # a quarter visible after the crop: dropped (< min_visibility 0.3)
    ], np.float32)
    labels = np.arange(5)
    crop = [{"name": "Crop", "x_min": 0, "y_min": 0, "x_max": 30, "y_max": 40}]
    out = build_transforms(crop, (40, 30), train=True)(image, boxes, labels, {})
    assert out.labels.tolist() == [0, 3]
    np.testing.assert_allclose(out.boxes, [[0, 5, 10, 15], [20, 0, 30, 10]])

    empty = build_transforms(None, (20, 20), train=False)(image, np.zeros((0, 4)), [], {})
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)


def test_mask_size_mismatch_is_an_error() -> None:
    t = build_transforms(None, (40, 60), train=False)
    with pytest.raises(ValueError, match="mask 'seg'"):
        t(_image(40, 60), None, None, {"seg": np.zeros((10, 10), np.uint8)})


@pytest.mark.parametrize("ops, message", [
    ([{"name": "HorizontalFlipp"}],
     "unknown transform 'HorizontalFlipp'.*did you mean 'HorizontalFlip'"),
    ([{"name": "HorizontalFlip", "prob": 0.5}],
     "unknown option 'prob' for transform 'HorizontalFlip'"),
    ([{"name": "Rotate", "p": 3}], "bad options for transform 'Rotate'.*p:"),
    ([{"p": 0.5}], "needs|must be dicts with a 'name'"),
    ({"name": "HorizontalFlip"}, "must be a list"),
])
def test_config_errors(ops: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_transforms(ops, (32, 32), train=False)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_int_image_size_is_square() -> None:
    out = build_transforms(None, 32, train=False)(_image(16, 8))
    assert out.image.shape == (3, 32, 32)


def test_augmentations_follow_the_torch_seed() -> None:
    ops = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "p": 0.5}]
    image = _image(16, 16)

    def run() -> list[torch.Tensor]:
        t = build_transforms(ops, (16, 16), train=True)
        return [t(image).image for _ in range(8)]

    torch.manual_seed(123)
    first = run()
    torch.manual_seed(123)
    second = run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert len({round(float(x.sum()), 3) for x in first}) > 1  # the ops do fire randomly


def test_depth_normals_instances_and_crowd_follow_a_flip() -> None:
    h, w = 40, 60
    image = _image(h, w)
    depth = np.arange(h * w, dtype=np.float32).reshape(h, w) + 1
    normals = np.zeros((h, w, 3), np.float32)
    normals[...] = (0.6, -0.0, 0.8)
    normals[:, :10] = (0.0, 0.6, 0.8)
    inst = np.zeros((2, h, w), np.uint8)
    inst[0, 5:10, 5:10] = 1
    inst[1, 20:30, 30:50] = 1
    t = build_transforms([{"name": "HorizontalFlip", "p": 1.0}], (h, w), train=True)
    out = t(image, np.array([[5, 5, 10, 10], [30, 20, 50, 30]]), np.array([1, 2]), {},
            crowd=np.array([False, True]), instance_masks=inst, depth=depth, normals=normals)
    np.testing.assert_allclose(out.boxes, [[50, 5, 55, 10], [10, 20, 30, 30]])
    assert out.crowd.tolist() == [False, True]
    np.testing.assert_array_equal(out.instance_masks, inst[:, :, ::-1])
    np.testing.assert_array_equal(out.depth, depth[:, ::-1])
    # A horizontal flip mirrors the x component of every normal.
    expected = normals[:, ::-1].copy()
    expected[..., 0] *= -1
    np.testing.assert_allclose(out.normals, expected)


def test_letterbox_padding_invalidates_depth_and_normals_and_drops_masks_with_boxes() -> None:
    h, w = 20, 40
    depth = np.full((h, w), 3.0, np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (h, w, 1))
    inst = np.zeros((2, h, w), np.uint8)
    inst[0, 0:5, 0:5] = 1
    inst[1, 10:20, 10:30] = 1
    # The first box is degenerate: dropped with its mask, the second keeps its own mask.
    t = build_transforms(None, (40, 40), train=False)
    out = t(_image(h, w), np.array([[3, 3, 3, 8], [10, 10, 30, 20]]), np.array([0, 1]), {},
            instance_masks=inst, depth=depth, normals=normals)
    assert out.labels.tolist() == [1] and out.instance_masks.shape == (1, 40, 40)
    # Letterbox: scale 1, pad_top 10 -> the mask moves down 10 rows.
    np.testing.assert_array_equal(out.instance_masks[0, 10:30], inst[1])
    assert (out.depth[:10] == 0).all() and (out.depth[10:30] == 3).all()
    assert (out.normals[:10] == 0).all() and (out.normals[10:30, :, 2] == 1).all()


def test_rotations_are_refused_with_normals() -> None:
    t = build_transforms([{"name": "Rotate", "limit": 30, "p": 1.0}], (20, 20), train=True)
    normals = np.tile(np.array([0, 0, 1], np.float32), (20, 20, 1))
    with pytest.raises(ValueError, match="Rotate rotates or shears"):
        t(_image(20, 20), normals=normals)
    t(_image(20, 20), depth=np.ones((20, 20), np.float32))  # depth alone may rotate
