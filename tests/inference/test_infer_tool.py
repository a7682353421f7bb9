"""tools/infer.py and run_inference end to end: image sets, video, outputs, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mtvision.inference import InferenceError, open_source, palette, run_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tools/
from tools.infer import main  # noqa: E402


def _records(out: Path) -> list[dict]:
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _check_boxes_inside(record: dict, w: int, h: int) -> None:
    for det in record["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, det
        assert det["class"] in ("car", "person", "dog") and 0 <= det["score"] <= 1


def test_folder_of_images(tmp_path, checkpoint, images_dir, capsys):
    out = tmp_path / "out"
    rc = main([str(checkpoint), str(images_dir), "--out", str(out), "--device", "cpu",
               "--score-thresh", "0.01", "--batch", "2"])
    assert rc == 0
    assert "Speed:" in capsys.readouterr().out
    records = _records(out)
    assert [Path(r["file"]).name for r in records] == ["000000128372.jpg", "000000343934.jpg"]
    for r in records:
        stem = Path(r["file"]).stem
        orig = cv2.imread(r["file"])
        h, w = orig.shape[:2]
        assert (r["height"], r["width"]) == (h, w)
        _check_boxes_inside(r, w, h)
        assert len(r["detections"]) > 0
        assert r["cls"]["name"] in ("day", "night") and 0 <= r["cls"]["score"] <= 1
        assert (r["annotated"], r["seg"], r["edge"]) == (
            f"{stem}.jpg", f"{stem}_seg.png", f"{stem}_edge.png")
        assert cv2.imread(str(out / r["annotated"])).shape == (h, w, 3)
        seg_png = Image.open(out / r["seg"])
        seg = np.array(seg_png)  # a palette PNG: PIL gives the indices, the class ids
        edge = cv2.imread(str(out / r["edge"]), cv2.IMREAD_UNCHANGED)
        assert seg_png.mode == "P" and seg.shape == edge.shape == (h, w)
        assert seg.dtype == edge.dtype == np.uint8
        assert seg.max() < 4
        # The palette is Pascal VOC's, the colours of the annotated image's overlay:
        # class 0 black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0).
        colours = np.array(seg_png.getpalette(), np.uint8).reshape(-1, 3)
        assert colours[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
        np.testing.assert_array_equal(colours[:256], palette(256))
        # What a viewer shows: each pixel in the colour of its class.
        np.testing.assert_array_equal(np.array(seg_png.convert("RGB")), colours[seg])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 2 and summary["kind"] == "images"
    assert set(summary["ms_per_image"]) == {"preprocess", "inference", "postprocess", "output"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_video(tmp_path, checkpoint, clip_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the codec fallback where avc1 is missing
        summary = run_inference(checkpoint, clip_path, out, device="cpu", batch=4,
                                score_thresh=0.01, progress=False)
    video = Path(summary["video"])
    assert video.parent == out and video.stem == "clip"
    src = open_source(clip_path)
    annotated = open_source(video)
    assert annotated.fps == pytest.approx(src.fps) == pytest.approx(12.5)
    assert annotated.frame_size == src.frame_size == (192, 108)
    assert len(list(annotated)) == len(list(src)) == 10
    records = _records(out)
    assert [r["frame"] for r in records] == list(range(10))
    assert records[2]["time_s"] == pytest.approx(2 / 12.5)
    for r in records:
        assert (r["width"], r["height"]) == (192, 108)
        _check_boxes_inside(r, 192, 108)
    assert summary["num_processed"] == 10 and summary["kind"] == "video"


def test_single_file_and_glob(tmp_path, checkpoint, images_dir):
    one = images_dir / "000000128372.jpg"
    s1 = run_inference(checkpoint, one, tmp_path / "a", device="cpu", progress=False)
    assert s1["num_processed"] == 1
    assert (tmp_path / "a" / "000000128372.jpg").is_file()
    s2 = run_inference(checkpoint, str(images_dir / "*.jpg"), tmp_path / "b", device="cpu",
                       save_media=False, max_frames=1, progress=False)
    assert s2["num_processed"] == 1
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "predictions.jsonl", "summary.json"]
    assert _records(tmp_path / "b")[0].get("seg") is None


def test_refuses_to_overwrite_inputs(tmp_path, checkpoint, images_dir):
    for p in images_dir.glob("*.jpg"):
        shutil.copy(p, tmp_path / p.name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InferenceError, match="overwrite"):
        run_inference(checkpoint, tmp_path, tmp_path, device="cpu", progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.jpg")} == before
    assert not (tmp_path / "predictions.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_exit_2_with_one_line(tmp_path, checkpoint, images_dir, capsys):
    missing = tmp_path / "missing_dir"
    assert str(missing) in _fails([str(checkpoint), str(missing), "--out", str(tmp_path)],
                                  capsys)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(2048))
    assert str(garbage) in _fails([str(checkpoint), str(garbage), "--out", str(tmp_path)],
                                  capsys)
    no_ckpt = tmp_path / "none.pt"
    assert str(no_ckpt) in _fails([str(no_ckpt), str(images_dir), "--out", str(tmp_path)],
                                  capsys)
    not_ckpt = tmp_path / "text.pt"
    not_ckpt.write_text("hello")
    assert str(not_ckpt) in _fails([str(not_ckpt), str(images_dir), "--out", str(tmp_path)],
                                   capsys)


def test_image_list_with_coco_json_and_options(tmp_path, checkpoint, images_dir, capsys):
    from pycocotools.coco import COCO

    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(str(p) for p in sorted(images_dir.glob("*.jpg"))) + "\n")
    out = tmp_path / "out"
    rc = main([str(checkpoint), str(listing), "--out", str(out), "--device", "cpu",
               "--conf", "0.01", "--iou", "0.5", "--imgsz", "96", "128", "--save-json",
               "--tasks", "det,seg"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_size"] == [96, 128] and summary["tasks"] == ["det", "seg"]
    records = _records(out)
    assert all("cls" not in r and "edge" not in r for r in records)
    assert not list(out.glob("*_edge.png"))
    results = json.loads((out / "predictions_coco.json").read_text())
    assert summary["coco_image_ids"] == {"000000128372": 128372, "000000343934": 343934}
    assert [c["name"] for c in summary["coco_categories"]] == ["car", "person", "dog"]
    assert len(results) == sum(len(r["detections"]) for r in records) > 0
    # pycocotools, the format's reference reader, accepts the file against matching images.
    sizes = {128372: (107, 160), 343934: (120, 160)}
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in sizes.items()],
                  "annotations": [], "categories": [{"id": k} for k in (1, 2, 3)]}
    gt.createIndex()
    dt = gt.loadRes(str(out / "predictions_coco.json"))
    for ann in dt.dataset["annotations"]:
        h, w = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
        assert ann["category_id"] in (1, 2, 3)
    # The COCO boxes are the JSONL boxes in xywh.
    first = [r for r in records if r["detections"]][0]
    image_id = summary["coco_image_ids"][first["name"]]
    box = first["detections"][0]["box"]
    match = [a for a in results if a["image_id"] == image_id][0]["bbox"]
    assert match == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]], abs=0.01)


def test_video_stride_maps_and_corrupt_frame(tmp_path, checkpoint, clip_path):
    data = bytearray(clip_path.read_bytes())
    offset = int(len(data) * 0.7)
    data[offset:offset + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_inference(checkpoint, bad, out, device="cpu", batch=2, vid_stride=1,
                                score_thresh=0.01, progress=False)
    assert any("could not be decoded" in str(w.message) for w in caught)
    assert summary["num_skipped"] >= 1
    assert summary["num_processed"] + summary["num_skipped"] == 10
    records = _records(out)
    assert len(records) == summary["num_processed"]
    assert len(list(open_source(summary["video"]))) == summary["num_processed"]
    for r in records:  # the maps of every frame, at the source's size
        for key in ("seg", "edge"):
            m = np.array(Image.open(out / r[key]))  # seg: a palette PNG, read as indices
            assert m.shape == (108, 192), (key, r[key])
        assert r[key].startswith("damaged_maps/")

    strided = run_inference(checkpoint, clip_path, tmp_path / "s", device="cpu",
                            vid_stride=3, save_media=True, progress=False)
    video = open_source(strided["video"])
    assert len(list(video)) == 4 and video.fps == pytest.approx(12.5 / 3, rel=1e-3)
    assert [r["frame"] for r in _records(tmp_path / "s")] == [0, 3, 6, 9]
    assert _records(tmp_path / "s")[1]["time_s"] == pytest.approx(3 / 12.5)


def test_stream_source_through_the_tool(tmp_path, checkpoint, clip_path, monkeypatch):
    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture",
                        lambda target: real(str(clip_path)) if target == 0 else real(target))
    summary = run_inference(checkpoint, "0", tmp_path / "cam", device="cpu", max_frames=5,
                            progress=False)
    assert summary["kind"] == "stream" and summary["num_processed"] == 5
    video = Path(summary["video"])
    assert video.stem == "webcam0"
    assert open_source(video).frame_size == (192, 108)
    assert [r["frame"] for r in _records(tmp_path / "cam")] == [0, 1, 2, 3, 4]


def test_depth_and_normals_maps(tmp_path, checkpoint_factory, tiny_config, images_dir):
    tiny_config["model"]["heads"] = {"seg": {"name": "fpn_seg", "num_classes": 4},
                                     "depth": {"name": "fpn_depth"},
                                     "normals": {"name": "fpn_normals"}}
    ckpt = checkpoint_factory(tmp_path / "geo.pt", config=tiny_config)
    out = tmp_path / "out"
    summary = run_inference(ckpt, images_dir / "000000343934.jpg", out, device="cpu",
                            progress=False)
    record = _records(out)[0]
    depth = cv2.imread(str(out / record["depth"]), cv2.IMREAD_UNCHANGED)
    normals = cv2.imread(str(out / record["normals"]), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (120, 160)
    assert normals.dtype == np.uint8 and normals.shape == (120, 160, 3)
    scale = summary["depth_png_scale"]
    assert depth.mean() / scale == pytest.approx(record["depth_stats"]["mean"], rel=1e-2, abs=1e-3)
    # (n + 1) / 2 * 255 back to unit vectors (BGR on disk).
    n = normals[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
    assert np.linalg.norm(n, axis=2).mean() == pytest.approx(1.0, abs=0.02)


def test_option_errors(tmp_path, checkpoint, images_dir, capsys):
    base = [str(checkpoint), str(images_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert "multiples of the model's largest stride 32" in _fails(base + ["--imgsz", "100"], capsys)
    assert "no head for task(s) depth" in _fails(base + ["--tasks", "det,depth"], capsys)
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in _fails(base + ["--half"], capsys)
    from mtvision.inference import display_problem

    if display_problem() is not None:
        err = _fails(base + ["--show"], capsys)
        assert err.startswith("error: --show: ") and ("GUI" in err or "display" in err)
    assert not (tmp_path / "o").exists()  # option errors are found before any output
