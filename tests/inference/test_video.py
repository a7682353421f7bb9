"""VideoWriter: codec probing and fallback, size checks, close() verification; write_video."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from mtvision.inference import InferenceError, VideoWriter, write_video

REAL_WRITER = cv2.VideoWriter


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    return [np.full((h, w, 3), (i * 30) % 256, np.uint8) for i in range(n)]


def _read_back(path) -> tuple[int, tuple[int, int], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    size = (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        size = (frame.shape[1], frame.shape[0])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, size, fps


def _only(*allowed: str):
    """A cv2.VideoWriter stand-in on which only the given fourcc codes open."""
    codes = {cv2.VideoWriter_fourcc(*c) for c in allowed}

    class Writer:
        def __init__(self, path, fourcc, fps, size):
            self._w = REAL_WRITER(path, fourcc, fps, size) if fourcc in codes else None

        def isOpened(self):  # noqa: N802 - cv2's name
            return self._w is not None and self._w.isOpened()

        def write(self, frame):
            self._w.write(frame)

        def release(self):
            if self._w is not None:
                self._w.release()

    return Writer


def test_round_trip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where avc1 is missing the fallback warns
        with VideoWriter(tmp_path / "out.mp4", 10, (64, 48)) as w:
            for f in _frames(6):
                w.write(f)
    assert w.codec in ("avc1", "mp4v", "MJPG")
    assert w.num_frames == 6
    n, size, fps = _read_back(w.path)
    assert (n, size) == (6, (64, 48))
    assert fps == pytest.approx(10)


def test_fallback_warns_with_codec_used(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoWriter", _only("mp4v", "MJPG"))
    with pytest.warns(UserWarning, match="avc1 unavailable.*with mp4v"):
        w = VideoWriter(tmp_path / "out.mp4", 12.5, (64, 48))
    with w:
        for f in _frames(3):
            w.write(f)
    assert w.codec == "mp4v" and w.path == tmp_path / "out.mp4"
    assert _read_back(w.path)[:2] == (3, (64, 48))


def test_fallback_to_mjpg_changes_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoWriter", _only("MJPG"))
    with pytest.warns(UserWarning, match="with MJPG"):
        path = write_video(_frames(4), tmp_path / "demo.mp4", fps=5)
    assert path == tmp_path / "demo.avi"
    assert not (tmp_path / "demo.mp4").exists()
    assert _read_back(path)[:2] == (4, (64, 48))


def test_no_codec_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoWriter", _only())
    target = tmp_path / "out.mp4"
    with pytest.raises(InferenceError, match="no video codec") as e:
        VideoWriter(target, 10, (64, 48))
    assert str(target) in str(e.value) and "mp4v" in str(e.value)


def test_close_checks_the_file(tmp_path, monkeypatch):
    class Silent:  # opens, but never writes anything to disk
        def __init__(self, *args):
            pass

        def isOpened(self):  # noqa: N802 - cv2's name
            return True

        def write(self, frame):
            pass

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Silent)
    w = VideoWriter(tmp_path / "out.mp4", 10, (64, 48))
    w.write(_frames(1)[0])
    with pytest.raises(InferenceError, match="produced no data"):
        w.close()


def test_wrong_frame_size_is_rejected(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = VideoWriter(tmp_path / "out.avi", 10, (64, 48))
    with pytest.raises(ValueError, match="shape"):
        w.write(np.zeros((64, 64, 3), np.uint8))
    w.write(_frames(1)[0])
    assert w.close().stat().st_size > 0


def test_write_video_round_trip_and_empty(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_video(iter(_frames(5, 80, 60)), tmp_path / "v.mp4", fps=12.5)
    n, size, fps = _read_back(path)
    assert (n, size) == (5, (80, 60)) and fps == pytest.approx(12.5)
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "empty.mp4", fps=5)
