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

from mtvision.inference import InferenceError, open_source, run_inference

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
        seg = cv2.imread(str(out / r["seg"]), cv2.IMREAD_UNCHANGED)
        edge = cv2.imread(str(out / r["edge"]), cv2.IMREAD_UNCHANGED)
        assert seg.shape == edge.shape == (h, w) and seg.dtype == edge.dtype == np.uint8
        assert seg.max() < 4
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
