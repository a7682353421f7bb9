"""Writing videos with whichever codec this OpenCV build can actually encode.

OpenCV wheels differ in their encoders: H.264 ("avc1") needs an FFmpeg built with an H.264
encoder, which pip wheels often lack, while MPEG-4 part 2 ("mp4v") and Motion-JPEG ("MJPG")
are almost always there. ``VideoWriter`` tries them in order and says which one it used.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from mtvision.inference.sources import InferenceError

# A codec probe that fails is expected (e.g. no H.264 encoder): keep FFmpeg's and OpenCV's
# own log lines about it off the terminal; our warning names the fallback. FFmpeg reads this
# variable when its backend first starts, which is after this module is imported.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    log = cv2.utils.logging
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(previous)


# (fourcc, suffix) in order of preference per requested suffix; the MJPG/.avi pair is the last
# resort because it makes large files, and it changes the file name.
_CODECS: dict[str, list[tuple[str, str]]] = {
    ".mp4": [("avc1", ".mp4"), ("mp4v", ".mp4"), ("MJPG", ".avi")],
    ".m4v": [("avc1", ".m4v"), ("mp4v", ".m4v"), ("MJPG", ".avi")],
    ".mov": [("avc1", ".mov"), ("mp4v", ".mov"), ("MJPG", ".avi")],
    ".avi": [("MJPG", ".avi"), ("XVID", ".avi")],
}


class VideoWriter:
    """An RGB frame writer for ``path`` (.mp4, .m4v, .mov or .avi) at ``fps`` and ``size``.

    ``size`` is (width, height); every frame must be RGB uint8 of exactly that size (OpenCV
    silently drops frames of another size, so a mismatch is an error here). The codec actually
    used is ``self.codec`` and the file ``self.path``, which ends in .avi when only MJPG worked.
    A fallback from the first choice is reported with ``warnings.warn``.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 codecs: list[tuple[str, str]] | None = None) -> None:
        requested = Path(path)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be positive (width, height), got {size}")
        suffix = requested.suffix.lower()
        if codecs is None:
            if suffix not in _CODECS:
                raise InferenceError(
                    f"unsupported video extension '{suffix}' for {requested}; "
                    f"use one of {', '.join(_CODECS)}")
            codecs = _CODECS[suffix]
        requested.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        self.fps = float(fps)
        self.num_frames = 0
        self._writer: cv2.VideoWriter | None = None
        tried = []
        for fourcc, ext in codecs:
            candidate = requested.with_suffix(ext)
            with _quiet_opencv():
                writer = cv2.VideoWriter(str(candidate), cv2.VideoWriter_fourcc(*fourcc),
                                         self.fps, self.size)
            if writer.isOpened():
                self._writer, self.codec, self.path = writer, fourcc, candidate
                break
            writer.release()
            # A failed open may leave an empty file behind; do not let it pass for output.
            if candidate.exists() and candidate.stat().st_size == 0:
                candidate.unlink()
            tried.append(fourcc)
        if self._writer is None:
            raise InferenceError(
                f"no video codec available to write {requested} (tried {', '.join(tried)})")
        if tried:
            warnings.warn(
                f"video codec {', '.join(tried)} unavailable in this OpenCV build; "
                f"writing {self.path} with {self.codec}", stacklevel=2)

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3)."""
        if self._writer is None:
            raise InferenceError(f"video writer for {self.path} is closed")
        w, h = self.size
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 of shape {(h, w, 3)} for {self.path}, "
                             f"got {frame.dtype} {frame.shape}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.num_frames += 1

    def close(self) -> Path:
        """Finish the file and check it exists and is non-empty; returns its path."""
        self._release()
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise InferenceError(f"video writer produced no data in {self.path} "
                                 f"(codec {self.codec}, {self.num_frames} frames)")
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            # Already failing: release the handle without masking the original error.
            self._release()

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write RGB uint8 frames (all the size of the first) to a video; returns the file written.

    The path may change to .avi when only the MJPG codec is available.
    """
    writer: VideoWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                writer = VideoWriter(path, fps, (frame.shape[1], frame.shape[0]))
            writer.write(frame)
        if writer is None:
            raise ValueError(f"write_video({path}): no frames given")
        return writer.close()
    finally:
        if writer is not None:
            writer._release()  # no-op after close(); frees the handle when a frame failed
