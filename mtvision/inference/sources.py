"""Inference sources: images, image lists, video files, webcams and network streams.

``open_source(source)`` returns an iterable of :class:`Frame` with the attributes ``is_video``
(frames of one clip, written back as a video), ``fps``, ``frame_size`` ((width, height),
``None`` for image sets whose sizes vary), ``total`` (frames that will be yielded, when known),
``stem`` (the base name of outputs) and ``num_skipped`` (unreadable images or undecodable
frames skipped so far, each with a warning).

What SOURCE may be:

- an image file, a folder of images, or a glob pattern (quote it in the shell);
- a ``.txt`` file listing one image path per line (relative paths are taken from the list's
  folder; blank lines and lines starting with ``#`` are ignored);
- a video file, decoded frame by frame in constant memory;
- a webcam index (``0``) or a stream URL (``rtsp://``, ``rtmp://``, ``http(s)://``,
  ``udp://``, ``tcp://``, ``srt://``), opened with OpenCV's ``VideoCapture``.
"""

from __future__ import annotations

import glob
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from mtvision.data.io import IMAGE_SUFFIXES, DataError, is_image_file, read_image, read_path_list

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
LIST_EXTENSIONS = (".txt",)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_URL = re.compile(rf"^({'|'.join(STREAM_SCHEMES)})://", re.IGNORECASE)


class InferenceError(RuntimeError):
    """A source, checkpoint or output that inference cannot use; the message names it."""


class Frame(NamedTuple):
    """One RGB uint8 image (H, W, 3), a name unique within its source, its position, its file.

    For videos ``index`` is the frame's position in the source (gaps where frames were skipped
    or strided over), so ``index / fps`` is its time.
    """

    image: np.ndarray
    name: str
    index: int
    path: Path | None = None


class ImageSource:
    """A sorted list of image files, read lazily one at a time.

    With ``skip_unreadable`` (folders, globs and lists) a file that cannot be decoded is skipped
    with a warning and counted in ``num_skipped``; otherwise (a single file) it is an
    InferenceError.
    """

    is_video = False
    fps: float | None = None
    frame_size: tuple[int, int] | None = None

    def __init__(self, files: list[Path], description: str, skip_unreadable: bool) -> None:
        self.files = files
        self.description = description
        self.skip_unreadable = skip_unreadable
        self.total: int | None = len(files)
        self.num_skipped = 0
        self.names = _unique_names(files)  # output-safe names, one per file
        self.stem = Path(description).stem or "images"

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        self.num_skipped = 0
        index = 0
        for path, name in zip(self.files, self.names, strict=True):
            try:
                image = read_image(path)
            except DataError as e:
                if not self.skip_unreadable:
                    raise InferenceError(str(e)) from None
                self.num_skipped += 1
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                continue
            yield Frame(image, name, index, path)
            index += 1

    def __repr__(self) -> str:
        return f"ImageSource({self.description!r}, {len(self.files)} files)"


def _unique_names(files: list[Path]) -> list[str]:
    """File stems, suffixed ``_1``, ``_2``... where a glob across folders repeats one."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        stem = f.stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        names.append(stem if n == 0 else f"{stem}_{n}")
    return names


class CaptureSource:
    """Frames decoded one at a time by ``cv2.VideoCapture`` (constant memory).

    Shared by video files and live sources. A frame that fails to decode in the middle of the
    source is skipped with a warning and counted in ``num_skipped``; the source ends after
    ``max_failures`` failed reads in a row. ``vid_stride`` keeps every n-th frame (the others
    are grabbed, never converted or predicted on).
    """

    is_video = True
    live = False
    max_failures = 8  # failed reads in a row that mean the end of the source
    retry_delay = 0.0  # seconds between failed reads (live sources wait for the network)

    def __init__(self, target: str | int, description: str, stem: str, vid_stride: int = 1,
                 path: Path | None = None) -> None:
        if vid_stride < 1:
            raise ValueError(f"vid_stride must be >= 1, got {vid_stride}")
        self.target = target
        self.description = description
        self.stem = stem
        self.vid_stride = vid_stride
        self.path = path
        self.num_skipped = 0
        cap = self._open()
        try:
            ok, first = cap.read()
            # A container can open yet hold no decodable stream (truncated or foreign data).
            if not ok or first is None:
                raise InferenceError(f"cannot decode any frame of {description}")
            fps = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        self.fps: float | None = float(fps) if fps and fps > 0 else None
        self.frame_size: tuple[int, int] | None = (first.shape[1], first.shape[0])
        # Containers may not store a count (or store a wrong one); live sources have none.
        self.frame_count: int | None = count if count > 0 and not self.live else None
        self.total: int | None = (None if self.frame_count is None
                                  else -(-self.frame_count // vid_stride))

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise InferenceError(f"cannot open {self.description}")
        return cap

    def _position(self, cap: cv2.VideoCapture, counted: int) -> int:
        """Index in the source of the frame just grabbed.

        Files: from its timestamp, so frames lost to corruption leave a gap instead of
        shifting every later index; live sources (and files without a frame rate): counted.
        """
        if not self.live and self.fps:
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            if msec >= 0:
                return int(round(msec * self.fps / 1000.0))
        return counted

    def __iter__(self) -> Iterator[Frame]:
        cap = self._open()
        self.num_skipped = 0
        last, failures = -1, 0
        try:
            while True:
                if not cap.grab():
                    failures += 1
                    if failures >= self.max_failures:
                        break
                    if self.retry_delay:
                        time.sleep(self.retry_delay)
                    continue
                index = max(self._position(cap, last + 1 + failures), last + 1)
                if index > last + 1:
                    self._skip(index - last - 1, last + 1)
                failures, last = 0, index
                if index % self.vid_stride:
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    self._skip(1, index)
                    continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(rgb, f"{self.stem}_{index:06d}", index, self.path)
        finally:
            cap.release()
        if self.frame_count is not None and last + 1 < self.frame_count:
            self._skip(self.frame_count - last - 1, last + 1, at_end=True)

    def _skip(self, n: int, first: int, at_end: bool = False) -> None:
        self.num_skipped += n
        which = f"frame {first}" if n == 1 else f"frames {first}-{first + n - 1}"
        where = " at the end" if at_end else ""
        warnings.warn(f"{self.description}: {which}{where} could not be decoded; skipped",
                      stacklevel=3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description!r}, {self.total} frames at "
                f"{self.fps} fps)")


class VideoSource(CaptureSource):
    """A video file; each iteration reopens it."""

    def __init__(self, path: Path, vid_stride: int = 1) -> None:
        super().__init__(str(path), f"video {path}", path.stem, vid_stride, path)


class StreamSource(CaptureSource):
    """A webcam (an int index) or a network stream (a URL): no frame count, counted indices.

    Any target OpenCV can open works here, a local video file included (which is how the
    tests exercise this code path without a camera or a network).
    """

    live = True
    max_failures = 30
    retry_delay = 0.05

    def __init__(self, target: str | int, vid_stride: int = 1) -> None:
        if isinstance(target, int):
            description, stem = f"webcam {target}", f"webcam{target}"
        else:
            description, stem = f"stream {target}", _stream_stem(str(target))
        super().__init__(target, description, stem, vid_stride)


def _stream_stem(url: str) -> str:
    """A file-name-safe base name for a stream's outputs: its last path part, or its host."""
    rest = re.sub(r"^[a-z]+://", "", url, flags=re.IGNORECASE).split("?")[0].rstrip("/")
    host, _, path = rest.partition("/")
    part = Path(path.rsplit("/", 1)[-1]).stem if path else host.rsplit("@", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", part).strip("._") or "stream"


def read_list(path: Path) -> list[Path]:
    """The images a list file names (see ``read_path_list``), each checked to exist."""
    try:
        entries = read_path_list(path)
    except DataError as e:
        raise InferenceError(str(e)) from None
    for n, file in entries:
        if not file.is_file():
            raise InferenceError(f"{path} line {n}: image not found: {file}")
        if not is_image_file(file):
            kinds = ", ".join(IMAGE_SUFFIXES)
            raise InferenceError(f"{path} line {n}: not an image file ({kinds}): {file}")
    if not entries:
        raise InferenceError(f"image list {path} names no image")
    return [file for _, file in entries]


def open_source(source: str | int | Path,
                vid_stride: int = 1) -> ImageSource | VideoSource | StreamSource:
    """Open any SOURCE of the module docstring; ``vid_stride`` applies to videos and streams.

    Raises InferenceError naming the source when it does not exist, matches no image, has an
    unsupported extension or cannot be opened.
    """
    if isinstance(source, int):
        return StreamSource(source, vid_stride)
    text = str(source)
    if _URL.match(text):
        return StreamSource(text, vid_stride)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise InferenceError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder: {path}")
        return ImageSource(files, text, skip_unreadable=True)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return VideoSource(path, vid_stride)
        if suffix in IMAGE_SUFFIXES:
            return ImageSource([path], text, skip_unreadable=False)
        if suffix in LIST_EXTENSIONS:
            return ImageSource(read_list(path), text, skip_unreadable=True)
        raise InferenceError(
            f"unsupported file type '{suffix}': {path} (images: {', '.join(IMAGE_SUFFIXES)}; "
            f"videos: {', '.join(VIDEO_EXTENSIONS)}; image lists: .txt)")
    if text.isdigit():
        return StreamSource(int(text), vid_stride)
    if any(c in text for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file() and is_image_file(p)]
        if not files:
            raise InferenceError(f"no image files match the pattern: {text}")
        return ImageSource(files, text, skip_unreadable=True)
    raise InferenceError(f"source not found: {text}")
