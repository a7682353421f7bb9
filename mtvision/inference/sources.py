"""Inference sources: one image, a folder or glob of images, or a video, as a stream of frames.

``open_source(source)`` returns an iterable of :class:`Frame` with the attributes ``is_video``,
``fps``, ``frame_size`` ((width, height), ``None`` for image sets whose sizes vary), ``total``
(frame count when known) and ``num_skipped`` (unreadable images skipped so far).
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from mtvision.data.io import DataError, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class InferenceError(RuntimeError):
    """A source, checkpoint or output that inference cannot use; the message names it."""


class Frame(NamedTuple):
    """One RGB uint8 image (H, W, 3), a name unique within its source, its position, its file."""

    image: np.ndarray
    name: str
    index: int
    path: Path | None = None


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


class ImageSource:
    """A sorted list of image files, read lazily one at a time.

    With ``skip_unreadable`` (folders and globs) a file that cannot be decoded is skipped with a
    warning and counted in ``num_skipped``; otherwise (a single file) it is an InferenceError.
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


class VideoSource:
    """A video file decoded frame by frame (constant memory); each iteration reopens it."""

    is_video = True
    num_skipped = 0

    def __init__(self, path: Path) -> None:
        self.path = path
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InferenceError(f"cannot open video: {path}")
            ok, first = cap.read()
            # A container can open yet hold no decodable stream (truncated or foreign data).
            if not ok or first is None:
                raise InferenceError(f"cannot decode any frame of video: {path}")
            fps = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        self.fps: float | None = float(fps) if fps and fps > 0 else None
        self.frame_size: tuple[int, int] | None = (first.shape[1], first.shape[0])
        # Containers may not store a count (or store a wrong one); then the total is unknown.
        self.total: int | None = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InferenceError(f"cannot open video: {self.path}")
        try:
            index = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(rgb, f"{self.path.stem}_{index:06d}", index, self.path)
                index += 1
        finally:
            cap.release()

    def __repr__(self) -> str:
        return f"VideoSource({str(self.path)!r}, {self.total} frames at {self.fps} fps)"


def open_source(source: str | Path) -> ImageSource | VideoSource:
    """Open an image file, a folder of images, a glob pattern or a video file.

    Raises InferenceError naming the source when it does not exist, matches no image, has an
    unsupported extension or cannot be opened as a video.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
        if not files:
            raise InferenceError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder: {path}")
        return ImageSource(files, text, skip_unreadable=True)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return VideoSource(path)
        if suffix in IMAGE_EXTENSIONS:
            return ImageSource([path], text, skip_unreadable=False)
        raise InferenceError(
            f"unsupported file type '{suffix}': {path} (images: {', '.join(IMAGE_EXTENSIONS)}; "
            f"videos: {', '.join(VIDEO_EXTENSIONS)})")
    if any(c in text for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file() and _is_image(p)]
        if not files:
            raise InferenceError(f"no image files match the pattern: {text}")
        return ImageSource(files, text, skip_unreadable=True)
    raise InferenceError(f"source not found: {text}")
