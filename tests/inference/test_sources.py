"""open_source: single images, folders, globs and videos, and their failures."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from mtvision.inference import InferenceError, StreamSource, open_source


def test_single_image_is_rgb(images_dir):
    path = images_dir / "000000343934.jpg"
    src = open_source(str(path))
    frames = list(src)
    assert not src.is_video and src.total == 1 and src.fps is None
    assert len(frames) == 1
    frame = frames[0]
    assert frame.name == "000000343934" and frame.index == 0 and frame.path == path
    assert frame.image.dtype == np.uint8 and frame.image.shape == (120, 160, 3)
    np.testing.assert_array_equal(frame.image, cv2.imread(str(path))[:, :, ::-1])


def test_folder_is_sorted_and_skips_unreadable(tmp_path, images_dir):
    for p in images_dir.glob("*.jpg"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "0_broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    src = open_source(tmp_path)
    assert src.total == 3  # the broken file is only found out when read
    with pytest.warns(UserWarning, match="0_broken.jpg"):
        frames = list(src)
    assert [f.name for f in frames] == ["000000128372", "000000343934"]
    assert [f.index for f in frames] == [0, 1]
    assert src.num_skipped == 1


def test_glob_pattern(tmp_path, images_dir):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(images_dir / "000000128372.jpg", tmp_path / sub / "x.jpg")
    src = open_source(str(tmp_path / "*" / "*.jpg"))
    frames = list(src)
    # The same stem in two folders must not give two outputs of the same name.
    assert [f.name for f in frames] == ["x", "x_1"]
    assert [f.path.parent.name for f in frames] == ["a", "b"]


def test_glob_without_match(tmp_path):
    pattern = str(tmp_path / "*.png")
    with pytest.raises(InferenceError, match="no image files match") as e:
        open_source(pattern)
    assert pattern in str(e.value)


def test_video_streams_frames(clip_path):
    src = open_source(str(clip_path))
    assert src.is_video
    assert src.fps == pytest.approx(12.5)
    assert src.frame_size == (192, 108)
    assert src.total == 10
    frames = list(src)
    assert len(frames) == 10
    assert all(f.image.shape == (108, 192, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(10))
    assert len({f.name for f in frames}) == 10
    assert len(list(src)) == 10  # iterating again reopens the file


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InferenceError, match="source not found") as e:
        open_source(missing)
    assert str(missing) in str(e.value)


def test_corrupt_video_names_file(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(InferenceError) as e:
        open_source(bad)
    assert str(bad) in str(e.value)


def test_unreadable_single_image_is_an_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but truncated")
    src = open_source(bad)
    with pytest.raises(InferenceError, match="bad.png"):
        list(src)


def test_empty_folder_and_unknown_type(tmp_path):
    with pytest.raises(InferenceError, match="no image files"):
        open_source(tmp_path)
    odd = tmp_path / "data.xyz"
    odd.write_text("?")
    with pytest.raises(InferenceError, match="unsupported file type"):
        open_source(odd)


def test_image_list_file(tmp_path, images_dir):
    (tmp_path / "sub").mkdir()
    shutil.copy(images_dir / "000000128372.jpg", tmp_path / "sub" / "a.jpg")
    listing = tmp_path / "list.txt"
    absolute = images_dir / "000000343934.jpg"
    listing.write_text(f"# my images\nsub/a.jpg\n\n  {absolute}  \n")
    src = open_source(listing)
    assert not src.is_video and src.total == 2
    frames = list(src)
    assert [f.path for f in frames] == [tmp_path / "sub" / "a.jpg", absolute]
    assert [f.name for f in frames] == ["a", "000000343934"]


def test_image_list_errors_name_the_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# header\nmissing.jpg\n")
    with pytest.raises(InferenceError) as e:
        open_source(listing)
    assert str(e.value) == f"{listing} line 2: image not found: {tmp_path / 'missing.jpg'}"
    (tmp_path / "clip.mp4").write_bytes(b"x")
    listing.write_text("clip.mp4\n")
    with pytest.raises(InferenceError, match="line 1: not an image file"):
        open_source(listing)
    listing.write_text("# nothing\n\n")
    with pytest.raises(InferenceError, match="names no image"):
        open_source(listing)


def test_stream_code_path_on_a_local_file(clip_path):
    # A local file read through the live-source code path stands in for a camera or network.
    src = StreamSource(str(clip_path), vid_stride=3)
    assert src.is_video and src.live and src.total is None  # live sources have no count
    assert src.fps == pytest.approx(12.5) and src.frame_size == (192, 108)
    frames = list(src)
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert src.num_skipped == 0
    reference = []
    cap = cv2.VideoCapture(str(clip_path))
    while (item := cap.read())[0]:
        reference.append(item[1][:, :, ::-1])
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[f.index])


def test_urls_and_webcam_indices_open_as_streams(monkeypatch, clip_path):
    opened = []
    real = cv2.VideoCapture

    def fake_capture(target):
        opened.append(target)
        return real(str(clip_path))

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    src = open_source("rtsp://user:pw@camera.local:554/live/ch1?tcp")
    assert isinstance(src, StreamSource) and src.stem == "ch1"
    assert len(list(src)) == 10
    cam = open_source("0")
    assert isinstance(cam, StreamSource) and cam.stem == "webcam0" and cam.target == 0
    assert open_source("http://camera.example:8080").stem == "camera.example_8080"
    assert open_source("https://camera.example/hls/live.m3u8").stem == "live"
    assert opened[0] == "rtsp://user:pw@camera.local:554/live/ch1?tcp" and 0 in opened


def test_unopenable_webcam_is_a_clear_error(monkeypatch):
    class Closed:
        def isOpened(self):  # noqa: N802 - OpenCV's name
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", lambda target: Closed())
    with pytest.raises(InferenceError, match="cannot open webcam 3"):
        open_source(3)
    with pytest.raises(InferenceError, match="cannot open stream rtsp://nowhere/x"):
        open_source("rtsp://nowhere/x")


def _corrupt_copy(clip_path, tmp_path, fraction: float):
    """The clip with 400 random bytes written over the middle of its data."""
    data = bytearray(clip_path.read_bytes())
    offset = int(len(data) * fraction)
    data[offset:offset + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    return bad


def test_corrupt_frame_mid_video_is_skipped_and_counted(tmp_path, clip_path):
    bad = _corrupt_copy(clip_path, tmp_path, 0.7)
    src = open_source(bad)
    assert src.total == 10
    with pytest.warns(UserWarning, match=r"corrupt.mp4: frames? \d.* could not be decoded"):
        frames = list(src)
    indices = [f.index for f in frames]
    assert src.num_skipped >= 1
    assert len(frames) + src.num_skipped == 10  # every frame is either yielded or counted
    assert indices == sorted(set(indices)) and indices[0] == 0
    # The skipped frame leaves a gap: the frames after it keep their true positions.
    assert max(indices) == 9 and len(indices) < 10


def test_vid_stride_on_video(clip_path):
    src = open_source(clip_path, vid_stride=4)
    assert src.total == 3
    assert [f.index for f in src] == [0, 4, 8]
    with pytest.raises(ValueError, match="vid_stride"):
        open_source(clip_path, vid_stride=0)
