"""Reading images and masks, and writing JSON files atomically.

Every read problem (missing file, undecodable bytes, unsupported pixel format) is a
``DataError`` whose one-line message names the file, so a bad sample in a large dataset is easy
to find.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class DataError(ValueError):
    """A problem with the data on disk; the message is one line naming the file."""


# The image files the readers, converters and inference pick up by extension (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_path_list(path: str | os.PathLike[str], what: str = "image list"
                   ) -> list[tuple[int, Path]]:
    """The paths a text file lists, one per line, with their line numbers: relative paths are
    taken from the list's folder; blank lines and lines starting with ``#`` are skipped
    (YOLO split lists, ``tools/infer.py`` sources)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} '{p}': {e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            listed = Path(entry).expanduser()
            out.append((n, listed if listed.is_absolute() else p.parent / listed))
    return out


def read_raw(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """Decode a file with cv2, keeping channels and bit depth as stored (``what`` names the
    kind of file in messages)."""
    p = Path(path)
    try:
        # np.fromfile + imdecode (rather than imread) so non-ASCII paths work and a missing file
        # is told apart from an undecodable one.
        buf = np.fromfile(p, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"cannot read {what} '{p}': file not found") from None
    except OSError as e:
        raise DataError(f"cannot read {what} '{p}': {e.strerror or e}") from None
    if buf.size == 0:
        raise DataError(f"cannot read {what} '{p}': file is empty")
    if buf[:2].tobytes() == b"\xff\xd8" and _jpeg_truncated(buf.tobytes()):
        # Some OpenCV versions decode a truncated JPEG with the missing rows grey, silently.
        raise DataError(f"cannot read {what} '{p}': truncated JPEG (the data ends before the "
                        "end-of-image marker)")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot read {what} '{p}': not a decodable image (corrupt or unsupported)")
    return img


# In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart marker; any
# other byte after it is the next marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG's data ends before its end-of-image marker. The segments are walked by
    their lengths (so thumbnails inside APP segments and data appended after the image do not
    count); scans are skipped up to their next marker."""
    pos, n = 2, len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return False  # not a structure we understand: let the decoder judge
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xD9:  # end of image
            return False
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        else:
            if pos + 4 > n:
                return True
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
                m = _JPEG_NEXT_MARKER.search(data, pos)
                if m is None:
                    return True
                pos = m.start()
    return True


def _to_uint8(img: np.ndarray, path: Path, what: str) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 65535 -> 255: the usual 16-bit to 8-bit mapping (rounding divide by 257).
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise DataError(f"cannot read {what} '{path}': unsupported pixel type {img.dtype}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as an ``H x W x 3`` uint8 RGB array: grey is repeated, alpha dropped,
    palettes give their colours, 16-bit values are scaled (``v / 257`` rounded)."""
    img = read_raw(path, "image")
    img = _to_uint8(img, Path(path), "image")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DataError(f"cannot read image '{path}': unsupported shape {img.shape}")


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel label map as an ``H x W`` uint8 array.

    A palette PNG gives its palette indices (the class ids, as in VOC masks), not colours. A
    16-bit map is accepted when its values fit in 0..255. A 3- or 4-channel file is accepted
    only when its colour channels are equal (a grey image saved as colour, alpha ignored);
    anything else is a ``DataError``, since colours are not class ids.
    """
    p = Path(path)
    m = _palette_indices(p, "mask")
    if m is not None:
        return m
    m = read_raw(p, "mask")
    if m.ndim == 3:
        if m.shape[2] == 1 or (m.shape[2] in (3, 4) and (m[..., :3] == m[..., :1]).all()):
            m = m[:, :, 0]
        else:
            raise DataError(
                f"cannot read mask '{p}': it has {m.shape[2]} different channels "
                "(a colour image?); expected single-channel class ids or a palette PNG"
            )
    if m.dtype == np.uint16:
        if m.size and int(m.max()) > 255:
            raise DataError(f"cannot read mask '{p}': 16-bit values above 255 (max {m.max()})")
        return m.astype(np.uint8)
    if m.dtype != np.uint8:
        raise DataError(f"cannot read mask '{p}': unsupported pixel type {m.dtype}")
    return m


def _palette_indices(p: Path, what: str) -> np.ndarray | None:
    """The indices of a palette image (uint8), or None when ``p`` is not one (or cannot be
    opened: ``read_raw`` then reports why).

    OpenCV expands palettes to colours, even with IMREAD_UNCHANGED, so Pillow reads these.
    """
    from PIL import Image

    try:
        im = Image.open(p)
    except (OSError, ValueError, SyntaxError):  # missing, empty, not an image...
        return None
    with im:
        if im.mode != "P":
            return None
        try:
            im.load()  # decode now, so a truncated file fails here, naming it
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read {what} '{p}': not a decodable image ({e})") from None
        return np.array(im, dtype=np.uint8)


def read_label_map(path: str | os.PathLike[str], what: str = "label map") -> np.ndarray:
    """Class or instance ids as stored: palette PNGs give their indices, other files their
    8- or 16-bit single-channel values (e.g. Cityscapes instanceIds, VOC masks)."""
    p = Path(path)
    m = _palette_indices(p, what)
    if m is not None:
        return m
    m = read_raw(p, what)
    if m.ndim == 3:
        if not (m[..., :3] == m[..., :1]).all():
            raise DataError(f"cannot read {what} '{p}': it has different colour channels; "
                            "expected ids in one channel (or a palette PNG)")
        m = m[..., 0]
    if m.dtype not in (np.uint8, np.uint16):
        raise DataError(f"cannot read {what} '{p}': unsupported pixel type {m.dtype}, expected "
                        "8- or 16-bit ids")
    return m


def write_json_atomic(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> None:
    """Write ``obj`` as JSON so that readers see either the old file or the complete new one.

    The data goes to a temporary file in the same directory (same filesystem, so the final
    ``os.replace`` is atomic), which is flushed to disk before it replaces ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; result files should be readable by others
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_png_atomic(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a PNG so that ``path`` is either absent, the old file or the complete new one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the .png suffix: cv2.imwrite picks the encoder by extension.
    tmp = p.with_name(f".{p.stem}.tmp.png")
    try:
        if not cv2.imwrite(str(tmp), image):
            raise DataError(f"cannot write '{p}': the PNG encoder failed")
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            return int(im.width), int(im.height)
    except FileNotFoundError:
        raise DataError(f"cannot read image '{p}': file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image '{p}': not a decodable image ({e})") from None
