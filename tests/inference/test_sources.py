"""open_source: single images, folders, globs and videos, and their failures."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from mtvision.inference import InferenceError, open_source


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
