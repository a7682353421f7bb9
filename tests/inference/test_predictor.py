"""Predictor: loading, inputs, mapping back to original pixels, Result; drawing helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtvision.data.transforms import letterbox_params
from mtvision.engine.checkpoint import CheckpointError
from mtvision.inference import InferenceError, Predictor, Result, draw_predictions
from mtvision.inference.drawing import colorize_segmentation, palette
from mtvision.registry import ConfigError


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor(checkpoint, device="cpu", score_thresh=0.01)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(50, 120), (120, 50)])
def test_predict_non_square_numpy(predictor, hw):
    h, w = hw
    r = predictor.predict(_image(h, w))
    assert isinstance(r, Result) and r.orig_size == (h, w)
    assert r.boxes.dtype == np.float32 and r.boxes.shape[1] == 4 and len(r.boxes) > 0
    assert len(r.scores) == len(r.labels) == len(r.class_names) == len(r.boxes)
    assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= w).all()
    assert (r.boxes[:, [1, 3]] >= 0).all() and (r.boxes[:, [1, 3]] <= h).all()
    assert (r.scores >= 0.01).all()
    assert set(r.class_names) <= {"car", "person", "dog"}
    assert r.semseg.shape == (h, w) and r.semseg.dtype == np.uint8 and r.semseg.max() < 4
    assert r.edge.shape == (h, w) and r.edge.dtype == np.float32
    assert 0.0 <= r.edge.min() and r.edge.max() <= 1.0
    assert r.cls["name"] in ("day", "night") and 0.0 <= r.cls["score"] <= 1.0
    record = json.loads(json.dumps(r.to_json()))
    assert (record["height"], record["width"]) == (h, w)
    assert len(record["detections"]) == len(r.boxes)
    assert record["cls"]["name"] == r.cls["name"]
    assert abs(sum(c["fraction"] for c in record["seg_classes"]) - 1.0) < 1e-3
    assert r.plot().shape == (h, w, 3)


def test_input_kinds_and_batches(predictor, images_dir):
    path = images_dir / "000000343934.jpg"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    results = predictor.predict([path, str(path), Image.open(path), rgb], batch_size=3)
    assert len(results) == 4
    assert results[0].name == "000000343934" and results[2].name is None
    for r in results:
        assert r.orig_size == (120, 160)
    # The same pixels give the same predictions whatever the input type and batch position
    # (up to JPEG decoder differences between PIL and OpenCV in results[2] and [3]).
    np.testing.assert_allclose(results[0].edge, results[1].edge, atol=1e-5)
    np.testing.assert_array_equal(results[0].semseg, results[1].semseg)
    np.testing.assert_allclose(results[0].boxes, results[1].boxes, atol=1e-3)


def _hand_made(predictor: Predictor, h: int, w: int, orig_box: list[float]):
    """Predictions in model-input pixels that correspond to known original-pixel ones."""
    _, batch_boxes = predictor.preprocess([np.zeros((h, w, 3), np.uint8)])
    lb = batch_boxes[0]
    scale, (nh, nw), (pl, pt) = letterbox_params((h, w), predictor.image_size)
    assert (lb.scale, lb.resized, lb.pad) == (scale, (nh, nw), (pl, pt))
    ih, iw = predictor.image_size
    x1, y1, x2, y2 = orig_box
    box_in = [x1 * scale + pl, y1 * scale + pt, x2 * scale + pl, y2 * scale + pt]
    # A second box lies wholly in the padding (top-left corner) and must be dropped.
    pad_box = [0.0, 0.0, 1.0, 1.0] if (pl >= 1 or pt >= 1) else None
    boxes = [box_in] + ([pad_box] if pad_box else [])
    seg = torch.full((ih, iw), 3, dtype=torch.long)  # the padding says 3: must not leak
    seg[pt:pt + nh, pl:pl + nw] = 1
    seg[pt:pt + nh, pl:pl + nw // 2] = 2  # left half of the image is class 2
    edge = torch.zeros(ih, iw)
    edge[pt:pt + nh, pl:pl + nw] = 1.0  # the image area is all boundary, the padding none
    preds = {
        "det": [{"boxes": torch.tensor(boxes), "scores": torch.tensor([0.9, 0.8][:len(boxes)]),
                 "labels": torch.tensor([1, 2][:len(boxes)])}],
        "seg": [seg],
        "edge": [edge],
        "cls": [{"label": 1, "score": 0.75, "probs": torch.tensor([0.25, 0.75])}],
    }
    return preds, batch_boxes


@pytest.mark.parametrize("hw", [(40, 100), (100, 40), (64, 64)])
def test_letterbox_inverse(predictor, hw):
    h, w = hw
    orig_box = [0.25 * w, 0.2 * h, 0.75 * w, 0.9 * h]
    preds, boxes = _hand_made(predictor, h, w, orig_box)
    r = predictor.postprocess(preds, boxes)[0]
    assert r.boxes.shape == (1, 4)  # the padding box is gone
    np.testing.assert_allclose(r.boxes[0], orig_box, atol=1e-3)
    assert r.class_names == ["person"] and r.scores[0] == pytest.approx(0.9)
    assert r.semseg.shape == (h, w)
    assert 3 not in np.unique(r.semseg)
    # Left half class 2, right half class 1, within a pixel of the middle after resizing.
    assert (r.semseg[:, : w // 2 - 2] == 2).all() and (r.semseg[:, w // 2 + 2:] == 1).all()
    assert r.edge.shape == (h, w) and np.allclose(r.edge, 1.0)
    assert r.cls == {"label": 1, "name": "night", "score": 0.75,
                     "probs": pytest.approx(np.array([0.25, 0.75]))}


def test_score_thresh_filters(checkpoint, predictor):
    low = predictor.predict(_image(64, 64))  # score_thresh=0.01
    assert len(low.boxes) > 0
    thresh = float(np.median(low.scores))
    high = Predictor(checkpoint, device="cpu", score_thresh=thresh).predict(_image(64, 64))
    assert (high.scores >= thresh).all() and len(high.boxes) <= len(low.boxes)


def test_absent_tasks_are_none(tmp_path, checkpoint_factory, tiny_config):
    del tiny_config["model"]["heads"]["seg"], tiny_config["model"]["heads"]["edge"]
    ckpt = checkpoint_factory(tmp_path / "det_cls.pt", config=tiny_config)
    predictor = Predictor(ckpt, device="cpu")
    assert predictor.task_names == ["det", "cls"]
    r = predictor.predict(_image(30, 70))
    assert r.semseg is None and r.edge is None and r.cls is not None
    assert "seg_classes" not in r.to_json()
    assert r.plot().shape == (30, 70, 3)


def test_weight_mismatch_names_checkpoint_and_keys(tmp_path, checkpoint_factory, tiny_config):
    from mtvision.models import build_model

    state = build_model(tiny_config["model"]).state_dict()
    dropped = next(k for k in state if k.startswith("heads.cls"))
    del state[dropped]
    other = dict(tiny_config, model={**tiny_config["model"],
                                     "heads": {**tiny_config["model"]["heads"],
                                               "seg": {"name": "fpn_seg", "num_classes": 7}}})
    ckpt = checkpoint_factory(tmp_path / "bad.pt", config=other, state_dict=state)
    with pytest.raises(CheckpointError) as e:
        Predictor(ckpt, device="cpu")
    msg = str(e.value)
    assert str(ckpt) in msg and dropped in msg and "\n" not in msg
    assert "heads.seg.predictor.weight (4, 64, 1, 1) vs (7, 64, 1, 1)" in msg  # ckpt vs model


def test_devices(checkpoint):
    assert Predictor(checkpoint, device="auto").device.type == (
        "cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="invalid device"):
        Predictor(checkpoint, device="toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Predictor(checkpoint, device="cuda")


def test_palette_and_colorize():
    p = palette(256)
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert tuple(p[0]) == (0, 0, 0) and tuple(p[1]) == (128, 0, 0) and tuple(p[2]) == (0, 128, 0)
    assert len({tuple(c) for c in p[:32]}) == 32  # distinct colours
    np.testing.assert_array_equal(palette(8), p[:8])
    seg = np.array([[0, 1], [2, 255]], np.uint8)
    np.testing.assert_array_equal(colorize_segmentation(seg), p[seg])


def test_draw_predictions_layers(class_names):
    image = np.full((60, 80, 3), 100, np.uint8)
    seg = np.zeros((60, 80), np.int64)
    seg[40:, :] = 1
    edge = np.zeros((60, 80), np.float32)
    edge[:, 70] = 0.9
    pred = {"seg": seg, "edge": edge,
            "det": {"boxes": np.array([[10.0, 20.0, 30.0, 35.0]]), "scores": np.array([0.8]),
                    "labels": np.array([0])},
            "cls": {"label": 0, "score": 0.6, "probs": np.array([0.6, 0.4])}}
    out = draw_predictions(image, pred, class_names)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 100).all()  # the input is left untouched
    assert (out[50, 40] != 100).any()  # class 1 is tinted
    assert (out[38, 50] == 100).all()  # background stays as it was
    assert tuple(out[10, 70]) == (255, 255, 0)  # edge pixels
    assert (out[28, 10] != 100).any()  # the box's left side
    assert (out[3, 3] != 100).any()  # the image class label in the corner
    with pytest.raises(ValueError, match="shape"):
        draw_predictions(image, {"seg": seg[:10]}, class_names)


def test_depth_and_normals_in_original_pixels(tmp_path, checkpoint_factory, tiny_config):
    import cv2

    tiny_config["model"]["heads"] = {"depth": {"name": "fpn_depth"},
                                     "normals": {"name": "fpn_normals"}}
    predictor = Predictor(checkpoint_factory(tmp_path / "geo.pt", config=tiny_config),
                          device="cpu")
    h, w = 40, 100
    image = _image(h, w, seed=3)
    r = predictor.predict(image)
    assert r.boxes is None and r.semseg is None
    # Reference: the model on the letterboxed input, cropped and resized back by hand.
    scale, (nh, nw), (left, top) = letterbox_params((h, w), (64, 64))
    batch, _ = predictor.preprocess([image])
    with torch.no_grad():
        out = predictor.model(batch)
    depth = out["depth"][0, 0, top:top + nh, left:left + nw].numpy()
    np.testing.assert_allclose(r.depth, cv2.resize(depth, (w, h)), rtol=1e-5, atol=1e-5)
    normals = out["normals"][0, :, top:top + nh, left:left + nw].permute(1, 2, 0).numpy()
    normals = cv2.resize(np.ascontiguousarray(normals), (w, h))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    assert r.normals.shape == (h, w, 3)
    np.testing.assert_allclose(r.normals, normals, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(r.normals, axis=2), 1.0, atol=1e-5)
    info = r.to_json()["depth_stats"]
    assert info == {"min": pytest.approx(float(r.depth.min()), abs=1e-4),
                    "max": pytest.approx(float(r.depth.max()), abs=1e-4),
                    "mean": pytest.approx(float(r.depth.mean()), abs=1e-4)}


def test_task_subset(checkpoint, predictor):
    image = _image(48, 80, seed=5)
    only = Predictor(checkpoint, device="cpu", tasks=["seg", "cls"])
    assert only.task_names == ["seg", "cls"]
    r, full = only.predict(image), predictor.predict(image)
    assert r.boxes is None and r.edge is None
    np.testing.assert_array_equal(r.semseg, full.semseg)
    np.testing.assert_allclose(r.cls["probs"], full.cls["probs"], atol=1e-6)
    with pytest.raises(InferenceError, match="no head for task.*depth.*heads are det, seg"):
        Predictor(checkpoint, device="cpu", tasks=["seg", "depth"])


def test_input_size_override(checkpoint):
    p = Predictor(checkpoint, device="cpu", image_size=(96, 128), score_thresh=0.01)
    assert p.image_size == (96, 128) and p.max_stride == 32
    batch, _ = p.preprocess([_image(30, 70)])
    assert tuple(batch.shape) == (1, 3, 96, 128)
    r = p.predict(_image(30, 70))
    assert r.semseg.shape == (30, 70)
    assert (r.boxes[:, [0, 2]] <= 70).all() and (r.boxes[:, [1, 3]] <= 30).all()
    with pytest.raises(InferenceError, match=r"100x64 must be positive multiples of the "
                                             r"model's largest stride 32 \(e\.g\. 96x64\)"):
        Predictor(checkpoint, device="cpu", image_size=(100, 64))


def test_iou_threshold_is_the_nms_one(checkpoint):
    from torchvision.ops import box_iou

    image = _image(64, 64, seed=1)
    loose = Predictor(checkpoint, device="cpu", score_thresh=0.01, iou_thresh=0.9).predict(image)
    tight = Predictor(checkpoint, device="cpu", score_thresh=0.01, iou_thresh=0.2).predict(image)
    assert len(tight.boxes) < len(loose.boxes)
    for k in np.unique(tight.labels):
        boxes = torch.from_numpy(tight.boxes[tight.labels == k])
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        assert iou.numel() == 1 or float(iou.max()) <= 0.2 + 1e-3
    with pytest.raises(InferenceError, match="IoU threshold"):
        Predictor(checkpoint, device="cpu", iou_thresh=0.0)


def test_half_needs_cuda(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(InferenceError, match="half precision needs a CUDA device"):
        Predictor(checkpoint, device="cpu", half=True)


def test_package_level_predictor(checkpoint, images_dir):
    import mtvision

    assert mtvision.Predictor is Predictor
    r = mtvision.Predictor(checkpoint, device="cpu").predict(images_dir / "000000128372.jpg")
    assert r.orig_size == (107, 160) and r.name == "000000128372"
