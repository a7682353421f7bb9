"""Batch inference over a source (images or a video) into an output folder.

Outputs in ``out_dir``:

- image sets: ``NAME.jpg`` (annotated), ``NAME_seg.png`` (uint8 class ids), ``NAME_edge.png``
  (uint8 boundary probability x 255), one per image, for the tasks the model has;
- a video: ``STEM.mp4`` (annotated, the source's fps and frame size; ``.avi`` when only MJPG
  can be encoded);
- ``predictions.jsonl``: one JSON record per image or frame (see ``Result.to_json``, plus
  ``file``, ``frame`` and the seg / edge PNG names relative to ``out_dir``);
- ``summary.json``: what ``run_inference`` returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mtvision.data.io import write_json_atomic
from mtvision.inference.predictor import Predictor, Result
from mtvision.inference.sources import (
    Frame,
    ImageSource,
    InferenceError,
    VideoSource,
    open_source,
)
from mtvision.inference.video import VideoWriter

DEFAULT_FPS = 25.0  # for the rare container that does not store a frame rate

T = TypeVar("T")


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def _write_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or single-channel uint8 image; the format follows the suffix."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # imencode + write_bytes rather than imwrite: a failure raises instead of returning False,
    # and non-ASCII paths work everywhere.
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise InferenceError(f"cannot encode image {path}")
    path.write_bytes(buf.tobytes())


class _Timer:
    """Accumulated seconds per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"preprocess": 0.0, "inference": 0.0,
                                          "postprocess": 0.0, "output": 0.0}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def ms_per_image(self, n: int) -> dict[str, float]:
        return {k: round(1000.0 * v / max(n, 1), 3) for k, v in self.seconds.items()}


def run_inference(checkpoint: str | os.PathLike, source: str | os.PathLike,
                  out_dir: str | os.PathLike, device: str = "auto", batch: int = 1,
                  save_media: bool = True, max_frames: int | None = None,
                  score_thresh: float | None = 0.3, progress: bool = True) -> dict[str, Any]:
    """Predict on every image or frame of ``source`` and write the outputs to ``out_dir``.

    ``save_media=False`` writes only the JSON files (no annotated images / video, no seg or
    edge PNGs). ``max_frames`` stops after that many images or frames. Returns a summary:
    counts, output paths and milliseconds per image for pre-process, inference (the model and
    its own post-processing), post-process (mapping back to original pixels) and output
    (drawing and writing files); a speed line is printed at the end.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    # The source first: a wrong path fails at once, before the model is loaded.
    src = open_source(source)
    out = Path(out_dir)
    if save_media:
        _check_no_overwrite(src, out)
    predictor = Predictor(checkpoint, device=device, score_thresh=score_thresh)
    out.mkdir(parents=True, exist_ok=True)
    total = src.total if max_frames is None else min(src.total or max_frames, max_frames)
    timer = _Timer()
    num_done = 0
    video_path: Path | None = None
    fd, tmp_name = tempfile.mkstemp(prefix=".predictions.jsonl.", suffix=".tmp", dir=out)
    tmp = Path(tmp_name)
    try:
        with contextlib.ExitStack() as stack:
            jsonl = stack.enter_context(os.fdopen(fd, "w", encoding="utf-8"))
            writer = None
            if src.is_video and save_media:
                fps = src.fps
                if fps is None:
                    warnings.warn(f"{source}: no frame rate stored; writing at {DEFAULT_FPS} fps",
                                  stacklevel=2)
                writer = stack.enter_context(VideoWriter(_video_output(src, out),
                                                         fps or DEFAULT_FPS, src.frame_size))
            # One untimed pass: lazy initialisation (CUDA context, oneDNN kernels) takes
            # seconds and would otherwise dominate the per-image timing of short runs.
            predictor.infer(torch.zeros(batch, 3, *predictor.image_size, device=predictor.device))
            bar = stack.enter_context(tqdm(total=total, unit="frame" if src.is_video else "img",
                                           disable=not progress, dynamic_ncols=True))
            for chunk in _batched(islice(src, max_frames), batch):
                images = [f.image for f in chunk]
                with timer("preprocess"):
                    tensor, boxes = predictor.preprocess(images)
                with timer("inference"):
                    preds = predictor.infer(tensor)
                with timer("postprocess"):
                    results = predictor.postprocess(preds, boxes, images,
                                                    [f.name for f in chunk])
                with timer("output"):
                    for frame, result in zip(chunk, results, strict=True):
                        record = _record(frame, result, src.is_video, src.fps)
                        if save_media:
                            annotated = result.plot()
                            if writer is not None:
                                writer.write(annotated)
                            else:
                                record.update(_save_image_outputs(out, frame, result, annotated))
                        jsonl.write(json.dumps(record) + "\n")
                num_done += len(chunk)
                bar.update(len(chunk))
            if writer is not None:
                video_path = writer.close()
            jsonl.flush()
            os.fsync(jsonl.fileno())
        if num_done == 0:
            raise InferenceError(f"no readable image in {source} "
                                 f"({src.num_skipped} skipped as unreadable)")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; outputs should be readable
        predictions = out / "predictions.jsonl"
        os.replace(tmp, predictions)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary = {
        "source": str(source),
        "checkpoint": str(checkpoint),
        "kind": "video" if src.is_video else "images",
        "num_processed": num_done,
        "num_skipped": src.num_skipped,
        "fps": src.fps,
        "device": str(predictor.device),
        "batch": batch,
        "input_size": list(predictor.image_size),
        "tasks": predictor.task_names,
        "out_dir": str(out),
        "predictions": str(predictions),
        "video": str(video_path) if video_path is not None else None,
        "ms_per_image": timer.ms_per_image(num_done),
    }
    write_json_atomic(summary, out / "summary.json", indent=2)
    ms = summary["ms_per_image"]
    h, w = predictor.image_size
    print(f"Speed: {ms['preprocess']:.1f} ms pre-process, {ms['inference']:.1f} ms inference, "
          f"{ms['postprocess']:.1f} ms post-process, {ms['output']:.1f} ms drawing/writing per "
          f"image at {h}x{w} on {predictor.device} (batch {batch}); {num_done} "
          f"{'frames' if src.is_video else 'images'}"
          f"{f', {src.num_skipped} skipped' if src.num_skipped else ''} -> {out}")
    return summary


def _record(frame: Frame, result: Result, is_video: bool, fps: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"file": str(frame.path) if frame.path is not None else frame.name}
    if is_video:
        record["frame"] = frame.index
        if fps:
            record["time_s"] = round(frame.index / fps, 4)
    record.update(result.to_json())
    return record


def _image_outputs(out: Path, name: str) -> dict[str, Path]:
    return {"annotated": out / f"{name}.jpg", "seg": out / f"{name}_seg.png",
            "edge": out / f"{name}_edge.png"}


def _video_output(src: VideoSource, out: Path) -> Path:
    return out / f"{src.path.stem}.mp4"


def _check_no_overwrite(src: ImageSource | VideoSource, out: Path) -> None:
    """Refuse, before any work, an output folder where results would replace the inputs."""
    if isinstance(src, VideoSource):
        video = _video_output(src, out)
        # VideoWriter may fall back from .mp4 to .avi, so both names must be free.
        if src.path.resolve() in {video.resolve(), video.with_suffix(".avi").resolve()}:
            raise InferenceError(f"output video {video} would overwrite the source; "
                                 "choose another output folder")
        return
    inputs = {p.resolve() for p in src.files}
    for name in src.names:
        for path in _image_outputs(out, name).values():
            if path.resolve() in inputs:
                raise InferenceError(f"output {path} would overwrite an input image; "
                                     "choose another output folder")


def _save_image_outputs(out: Path, frame: Frame, result: Result,
                        annotated: np.ndarray) -> dict[str, str]:
    """Write NAME.jpg, NAME_seg.png, NAME_edge.png; returns the names for the JSON record."""
    paths = _image_outputs(out, frame.name)
    files = {"annotated": annotated}
    if result.semseg is not None:
        files["seg"] = result.semseg
    if result.edge is not None:
        files["edge"] = np.clip(result.edge * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for key, image in files.items():
        _write_image(paths[key], image)
    return {key: paths[key].name for key in files}
