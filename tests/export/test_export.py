"""ONNX / TorchScript export checked against the PyTorch model's own predictions.

The reference is ``model.predict`` (the heads' post-processing), not the exported wrapper:
ONNX outputs go through the post-processing the README documents (numpy + torchvision NMS)
and must give the same detections, class maps, edge maps and probabilities.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import batched_nms

from mtvision.export import ExportError, ExportModule, export_checkpoint
from mtvision.export.verify import OnnxRunner, compare
from mtvision.inference import Predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tools/
from tools.export import main  # noqa: E402

FAST = {"exporter": "legacy", "opset": 17}  # ~10x faster to export than dynamo


def _batch(checkpoint: Path, images: list[np.ndarray]) -> tuple[Predictor, torch.Tensor]:
    predictor = Predictor(checkpoint, device="cpu")
    return predictor, predictor.preprocess(images)[0]


def _ort(path: str | Path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": x.numpy()}), strict=True))


def _decode_det(raw: np.ndarray, info: dict, image_size: list[int]) -> dict[str, np.ndarray]:
    """The README's post-processing of one image's det output [N, 4 + C], from the report."""
    h, w = image_size
    c = info["num_classes"]
    boxes, scores = raw[:, :4], raw[:, 4:]
    picked_boxes, picked_scores, picked_labels = [], [], []
    start = 0
    for stride in info["strides"]:
        n = (h // stride) * (w // stride)
        flat = scores[start:start + n].reshape(-1)
        cand = np.nonzero(flat > info["score_thresh"])[0]
        cand = cand[np.argsort(-flat[cand], kind="stable")[:info["topk_candidates"]]]
        picked_boxes.append(boxes[start:start + n][cand // c])
        picked_scores.append(flat[cand])
        picked_labels.append(cand % c)
        start += n
    assert start == len(raw) == info["num_locations"]
    b, s, lab = (np.concatenate(v) for v in (picked_boxes, picked_scores, picked_labels))
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, s, lab = torch.from_numpy(b[ok]), torch.from_numpy(s[ok]), torch.from_numpy(lab[ok])
    keep = batched_nms(b, s, lab, info["nms_thresh"])[:info["max_detections"]]
    return {"boxes": b[keep].numpy(), "scores": s[keep].numpy(), "labels": lab[keep].numpy()}


def _check_same_detections(got: dict[str, np.ndarray], expected: dict[str, torch.Tensor]) -> None:
    assert len(got["scores"]) == len(expected["scores"]) > 0
    np.testing.assert_allclose(got["boxes"], expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(got["scores"], expected["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["labels"], expected["labels"].numpy())


def _nms_rows(rows: np.ndarray) -> dict[str, np.ndarray]:
    """The valid rows of an in-graph NMS output [max_det, 6]; the padding must be zeros."""
    n = int((rows[:, 4] > 0).sum())
    assert (rows[:n, 4] > 0).all() and not rows[n:].any()
    return {"boxes": rows[:n, :4], "scores": rows[:n, 4], "labels": rows[:n, 5].astype(np.int64)}


def _only(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# ---------------------------------------------------------------- ONNX


def test_onnx_outputs_match_predict(ckpt_copy, photos):
    report = export_checkpoint(ckpt_copy, **FAST)
    model_path = ckpt_copy.with_suffix(".onnx")
    assert report["file"] == str(model_path) and model_path.is_file()
    assert json.loads(Path(str(model_path) + ".json").read_text()) == report
    assert report["opset"] == 17 and report["input"]["shape"] == [1, 3, 64, 64]
    assert [o["name"] for o in report["outputs"]] == ["det", "seg", "edge", "cls"]
    assert all(o["ok"] and o["max_abs_diff"] <= o["tolerance"] for o in report["outputs"])
    assert report["classes"]["det"] == ["car", "person", "dog"]
    assert report["normalize"]["mean"] == pytest.approx([123.675, 116.28, 103.53])

    predictor, x = _batch(ckpt_copy, photos[:1])
    out = _ort(model_path, x)
    assert {k: list(v.shape) for k, v in out.items()} == {
        o["name"]: o["shape"] for o in report["outputs"]}
    expected = predictor.model.predict(x)
    det = _decode_det(out["det"][0], report["heads"]["det"], report["image_size"])
    _check_same_detections(det, expected["det"][0])
    assert len(det["scores"]) == 30  # the cap (max_detections) is reached and respected
    np.testing.assert_array_equal(out["seg"][0].argmax(0), expected["seg"][0].numpy())
    np.testing.assert_allclose(out["edge"][0, 0], expected["edge"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["cls"][0], expected["cls"][0]["probs"].numpy(), atol=1e-6)


def test_onnx_dynamic_batch_with_nms(ckpt_copy, photos):
    # The default exporter (dynamo); the tool test below covers the legacy one.
    report = export_checkpoint(ckpt_copy, dynamic=True, nms=True)
    assert report["opset"] == 18 and report["exporter"] == "torch.onnx dynamo"
    assert report["input"]["shape"] == ["batch", 3, 64, 64]
    assert report["outputs"][0]["shape"] == ["batch", 30, 6]
    assert report["verification"]["batch_sizes"] == [1, 2]
    session = ort.InferenceSession(report["file"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"

    predictor, x = _batch(ckpt_copy, photos)  # two different photos in one batch
    out = _ort(report["file"], x)
    expected = predictor.model.predict(x)
    for i in range(2):
        _check_same_detections(_nms_rows(out["det"][i]), expected["det"][i])
        np.testing.assert_array_equal(out["seg"][i].argmax(0), expected["seg"][i].numpy())
        np.testing.assert_allclose(out["edge"][i, 0], expected["edge"][i].numpy(), atol=1e-5)


def test_depth_normals_and_multilabel(tmp_path, dense_checkpoint, photos):
    out_path = tmp_path / "dense.onnx"
    report = export_checkpoint(dense_checkpoint, out=out_path, **FAST)
    assert [(o["name"], o["shape"]) for o in report["outputs"]] == [
        ("depth", [1, 1, 64, 64]), ("normals", [1, 3, 64, 64]), ("cls", [1, 3])]
    assert report["heads"]["cls"]["multi_label"] is True
    assert "sigmoid" in report["outputs"][2]["description"]
    predictor, x = _batch(dense_checkpoint, photos[:1])
    out = _ort(out_path, x)
    expected = predictor.model.predict(x)
    np.testing.assert_allclose(out["depth"][0, 0], expected["depth"][0].numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(out["normals"][0], expected["normals"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["cls"][0], expected["cls"][0]["probs"].numpy(), atol=1e-6)


def test_readme_preprocessing_matches_mtvision(checkpoint, photos):
    """The README's letterbox + normalisation recipe gives ``Predictor.preprocess``'s input."""
    import cv2

    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)

    def preprocess(rgb, H, W):  # noqa: N803 - as in the README
        h, w = rgb.shape[:2]
        scale = min(H / h, W / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (H - nh) // 2, (W - nw) // 2
        canvas = np.zeros((H, W, 3), np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh),
                                                          interpolation=cv2.INTER_LINEAR)
        x = (canvas.astype(np.float32) - mean) / std
        return x.transpose(2, 0, 1)[None], scale, (left, top)

    predictor = Predictor(checkpoint, device="cpu")
    for size in [(64, 64), (64, 96), (256, 192)]:
        predictor.image_size = size
        for photo in photos:
            x, lb = predictor.preprocess([photo])
            got, scale, pad = preprocess(photo, *size)
            np.testing.assert_allclose(got, x.numpy(), atol=1e-5)
            assert (scale, pad) == (lb[0].scale, lb[0].pad)


# ---------------------------------------------------------------- TorchScript


def test_torchscript_trace(ckpt_copy, photos):
    report = export_checkpoint(ckpt_copy, format="torchscript", nms=True)
    path = Path(report["file"])
    assert path.name == "tiny.torchscript.pt" and report["exporter"] == "torch.jit.trace"
    predictor, x = _batch(ckpt_copy, photos[:1])
    with warnings.catch_warnings():  # torch 2.14 deprecates torch.jit, which still works
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        det, seg, edge, cls = loaded(x)
    expected = predictor.model.predict(x)
    _check_same_detections(_nms_rows(det[0].numpy()), expected["det"][0])
    assert torch.equal(seg[0].argmax(0), expected["seg"][0])
    torch.testing.assert_close(cls[0], expected["cls"][0]["probs"])


def test_torchscript_script_works_or_says_use_trace(ckpt_copy):
    try:
        report = export_checkpoint(ckpt_copy, format="torchscript", method="script")
    except ExportError as e:
        message = str(e)
        assert "cannot be scripted" in message and "--method trace" in message
        assert "\n" not in message and "Traceback" not in message
        _only(ckpt_copy.parent, "tiny.pt")
    else:
        assert report["exporter"] == "torch.jit.script" and Path(report["file"]).is_file()


# ---------------------------------------------------------------- errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_half_needs_cuda(ckpt_copy, capsys):
    assert main([str(ckpt_copy), "--half"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --half") and "CUDA" in err and "\n" not in err
    _only(ckpt_copy.parent, "tiny.pt")


@pytest.mark.parametrize("argv", [["--imgsz", "70"], ["--imgsz", "64", "100"],
                                  ["--imgsz", "0"], ["--imgsz", "64", "64", "64"]])
def test_bad_input_size(ckpt_copy, capsys, argv):
    assert main([str(ckpt_copy), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    if "0" in argv or "70" in argv or "100" in argv:
        assert "multiples of the model's largest stride 32" in err
    _only(ckpt_copy.parent, "tiny.pt")


def test_out_cannot_overwrite_the_checkpoint(ckpt_copy):
    with pytest.raises(ExportError, match="checkpoint itself"):
        export_checkpoint(ckpt_copy, format="torchscript", out=ckpt_copy)


def test_failed_verification_leaves_no_file(ckpt_copy, capsys, monkeypatch):
    run = OnnxRunner.__call__

    def off_by_one(self, images):  # an exported seg map that disagrees with PyTorch
        outputs = run(self, images)
        outputs[0] = outputs[0] + 1.0
        return outputs

    monkeypatch.setattr(OnnxRunner, "__call__", off_by_one)
    out = ckpt_copy.parent / "bad.onnx"
    assert main([str(ckpt_copy), "--out", str(out), "--tasks", "seg,edge", "--exporter",
                 "legacy", "--opset", "17"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].split()[:5] == ["output", "shape", "max", "abs", "diff"]  # the table first
    assert [line.split()[0] for line in err[1:-1]] == ["seg", "edge"]  # only the --tasks
    assert err[1].endswith("NO") and err[2].endswith("yes")
    assert err[-1].startswith("error: the exported model differs from PyTorch (seg: max abs "
                              "diff 1 > tolerance 0.0001)")
    assert "was not written" in err[-1]
    _only(ckpt_copy.parent, "tiny.pt")  # neither the model, nor its report, nor a temp file


def test_export_module_rejects_unknown_tasks(checkpoint):
    model = Predictor(checkpoint, device="cpu").model
    with pytest.raises(ExportError, match="unknown tasks"):
        ExportModule(model, ["det", "depth"])
    with pytest.raises(ExportError, match="needs a detection head"):
        ExportModule(model, ["seg"], nms=True)
    assert model.max_stride == 32


def test_in_graph_nms_eager_batch_and_empty(checkpoint, photos):
    predictor, x = _batch(checkpoint, photos)
    module = ExportModule(predictor.model, ["det"], nms=True).eval()
    with torch.no_grad():
        (det,) = module(x)
    expected = predictor.model.predict(x, ["det"])["det"]
    for i in range(2):
        _check_same_detections(_nms_rows(det[i].numpy()), expected[i])
    predictor.model.heads["det"].score_thresh = 1.0  # nothing passes: all padding
    with torch.no_grad():
        (det,) = module(x)
    assert det.shape == (2, 30, 6) and not det.any()


def test_compare_takes_nms_rows_as_a_set():
    ref = torch.tensor([[[0, 0, 10, 10, 0.9, 1], [5, 5, 20, 20, 0.9, 2], [0, 0, 0, 0, 0, 0]]])
    swapped = ref.numpy()[:, [1, 0, 2]]  # two equal scores in the other order
    (row,) = compare(["det"], [ref], [swapped], 1e-4, unordered=["det"])
    assert row["ok"] and row["max_abs_diff"] == 0 and row["tolerance"] == pytest.approx(2e-3)
    assert not compare(["det"], [ref], [swapped], 1e-4)[0]["ok"]  # in order: 10 px off
    moved = swapped.copy()
    moved[0, 0, 0] += 1.0
    (row,) = compare(["det"], [ref], [moved], 1e-4, unordered=["det"])
    assert not row["ok"] and row["max_abs_diff"] == pytest.approx(1.0)
    (row,) = compare(["det"], [ref], [swapped[:, :2]], 1e-4)
    assert not row["ok"] and "shape" in row["problem"]


# ---------------------------------------------------------------- the tool


def test_tool_end_to_end(ckpt_copy, photos, capsys):
    out = ckpt_copy.parent / "exported" / "model.onnx"
    out.parent.mkdir()
    argv = [str(ckpt_copy), "--imgsz", "64", "96", "--out", str(out), "--dynamic", "--nms",
            "--exporter", "legacy", "--opset", "17"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"onnx: {out} (opset 17, torch.onnx legacy, input images "
                               "[batch, 3, 64, 96] float32")
    table = {line.split()[0]: line for line in lines[2:6]}
    assert set(table) == {"det", "seg", "edge", "cls"}
    assert all(line.endswith("yes") for line in table.values())
    assert "[batch, 30, 6]" in table["det"] and "[batch, 4, 64, 96]" in table["seg"]
    report = json.loads(Path(str(out) + ".json").read_text())
    assert report["image_size"] == [64, 96]
    # 8x12 + 4x6 + 2x3 locations (strides 8, 16, 32)
    assert report["heads"]["det"]["num_locations"] == 126
    # The 160x120 photo scaled by 64 / 120 to 85x64, centred in 96 columns.
    assert report["letterbox"]["example"]["pad_left_top"] == [5, 0]
    _only(out.parent, "model.onnx", "model.onnx.json")

    # A batch of two at the overridden size, against predict at that size.
    predictor = Predictor(ckpt_copy, device="cpu")
    predictor.image_size = (64, 96)
    x = predictor.preprocess(photos)[0]
    det = _ort(out, x)["det"]
    expected = predictor.model.predict(x, ["det"])["det"]
    for i in range(2):
        _check_same_detections(_nms_rows(det[i]), expected[i])
