"""Batch inference over a source (images, a video or a stream) into an output folder.

Outputs in ``out_dir`` (the tasks the model has, or those asked for):

- image sets: ``NAME.jpg`` (annotated) and the maps ``NAME_seg.png`` (class ids as the pixel
  values of a palette PNG whose colours are those of the annotated image),
  ``NAME_edge.png`` (uint8 boundary probability x 255), ``NAME_depth.png`` (uint16 depth x
  ``DEPTH_PNG_SCALE``: millimetres when the training depth is in metres) and
  ``NAME_normals.png`` (RGB (n + 1) / 2);
- a video or stream: ``STEM.mp4`` (annotated, the source's size and frame rate divided by
  ``vid_stride``; ``.avi`` when only MJPG can be encoded) and the maps of each frame in
  ``STEM_maps/``;
- ``predictions.jsonl``: one JSON record per image or frame (see ``Result.to_json``, plus
  ``file``, ``frame``, ``time_s`` and the map PNGs' paths relative to ``out_dir``);
- ``predictions_coco.json`` with ``save_json``: the detections in the COCO results format;
- ``summary.json``: what ``run_inference`` returns.

Every JSON file is written atomically; an interrupted run leaves no half-written one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
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
from PIL import Image
from tqdm import tqdm

from mtvision.data.io import write_json_atomic
from mtvision.inference.display import Display
from mtvision.inference.drawing import normals_to_rgb, palette
from mtvision.inference.predictor import Predictor, Result
from mtvision.inference.sources import (
    CaptureSource,
    Frame,
    ImageSource,
    InferenceError,
    open_source,
)
from mtvision.inference.video import VideoWriter
from mtvision.metrics.detection import coco_results

DEFAULT_FPS = 25.0  # for the rare container that does not store a frame rate
DEPTH_PNG_SCALE = 1000.0  # depth x 1000 in a uint16 PNG: mm resolution up to 65 m

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


def _write_class_map(path: Path, ids: np.ndarray) -> None:
    """A class map as a palette PNG (as VOC's masks): the pixel values are the class ids, so
    PIL and numpy read them back unchanged, and viewers show the colours of the segmentation
    overlay (``drawing.palette``). OpenCV expands palette PNGs to colours: read with PIL."""
    image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))  # mode "L"
    image.putpalette(palette(256).tobytes())  # "L" + palette -> "P", the values kept
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


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


def run_inference(checkpoint: str | os.PathLike, source: str | int | os.PathLike,
                  out_dir: str | os.PathLike, device: str = "auto", batch: int = 1,
                  save_media: bool = True, max_frames: int | None = None,
                  score_thresh: float | None = 0.3, iou_thresh: float | None = None,
                  image_size: int | tuple[int, int] | None = None,
                  tasks: list[str] | None = None, half: bool = False, save_json: bool = False,
                  vid_stride: int = 1, show: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Predict on every image or frame of ``source`` and write the outputs to ``out_dir``.

    ``source``: see ``open_source``. ``save_media=False`` writes only the JSON files.
    ``max_frames`` stops after that many images or frames; ``vid_stride`` keeps every n-th
    frame of a video or stream; ``save_json`` adds the COCO results file; ``show`` displays
    each annotated frame (press q to stop). ``score_thresh``, ``iou_thresh``, ``image_size``,
    ``tasks`` and ``half`` go to ``Predictor``. A live source runs until it ends, ``max_frames``
    or Ctrl-C, and what was done until then is kept.

    Returns a summary: counts, output paths and milliseconds per image for pre-process,
    inference (the model and its own post-processing), post-process (mapping back to original
    pixels) and output (drawing and writing files); a speed line is printed at the end.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if vid_stride < 1:
        raise ValueError(f"vid_stride must be >= 1, got {vid_stride}")
    # The cheap checks first: a wrong path or a missing display fails before the model loads.
    display = Display(f"mtvision: {source}") if show else None
    src = open_source(source, vid_stride=vid_stride)
    out = Path(out_dir)
    if save_media:
        _check_no_overwrite(src, out)
    size = None if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size))
    predictor = Predictor(checkpoint, device=device, score_thresh=score_thresh,
                          iou_thresh=iou_thresh, image_size=size, tasks=tasks, half=half)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InferenceError(f"cannot create output folder {out}: {e.strerror}") from None
    total = src.total if max_frames is None else min(src.total or max_frames, max_frames)
    timer = _Timer()
    num_done = 0
    interrupted = False
    video_path: Path | None = None
    detections: list[tuple[str, int, dict[str, np.ndarray]]] = []
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".predictions.jsonl.", suffix=".tmp", dir=out)
    except OSError as e:
        raise InferenceError(f"cannot write to output folder {out}: {e.strerror}") from None
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
                writer = stack.enter_context(VideoWriter(
                    _video_output(src, out), (fps or DEFAULT_FPS) / vid_stride, src.frame_size))
            if display is not None:
                stack.callback(display.close)
            # One untimed pass: lazy initialisation (CUDA context, oneDNN kernels) takes
            # seconds and would otherwise dominate the per-image timing of short runs.
            warm = torch.zeros(batch, 3, *predictor.image_size, device=predictor.device)
            predictor.infer(warm.half() if predictor.half else warm)
            # No bar for a single image: it would only stand between the user and an error.
            single = not src.is_video and total == 1
            bar = stack.enter_context(tqdm(total=total, unit="frame" if src.is_video else "img",
                                           disable=not progress or single, dynamic_ncols=True))
            try:
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
                            annotated = result.plot() if save_media or display else None
                            if save_media:
                                if writer is not None:
                                    writer.write(_fit(annotated, writer.size))
                                record.update(_save_maps(out, src, frame, result, annotated))
                            if save_json and result.boxes is not None:
                                detections.append((frame.name, frame.index, result.prediction()
                                                   ["det"]))
                            jsonl.write(json.dumps(record) + "\n")
                            if display is not None and not display.show(annotated):
                                raise KeyboardInterrupt
                    num_done += len(chunk)
                    bar.update(len(chunk))
            except KeyboardInterrupt:
                # Ctrl-C (or q in the window) ends a webcam or stream run: keep what is done.
                interrupted = True
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
        "kind": "stream" if getattr(src, "live", False) else (
            "video" if src.is_video else "images"),
        "num_processed": num_done,
        "num_skipped": src.num_skipped,
        "interrupted": interrupted,
        "fps": src.fps,
        "vid_stride": vid_stride,
        "device": str(predictor.device),
        "half": predictor.half,
        "batch": batch,
        "input_size": list(predictor.image_size),
        "tasks": predictor.task_names,
        "classes": predictor.classes,
        "out_dir": str(out),
        "predictions": str(predictions),
        "video": str(video_path) if video_path is not None else None,
        "depth_png_scale": DEPTH_PNG_SCALE if "depth" in predictor.task_names else None,
        "ms_per_image": timer.ms_per_image(num_done),
    }
    if save_json:
        summary.update(_write_coco(out, detections, src.is_video, predictor))
    write_json_atomic(summary, out / "summary.json", indent=2)
    ms = summary["ms_per_image"]
    h, w = predictor.image_size
    skipped = f", {src.num_skipped} skipped" if src.num_skipped else ""
    stopped = ", stopped by the user" if interrupted else ""
    print(f"Speed: {ms['preprocess']:.1f} ms pre-process, {ms['inference']:.1f} ms inference, "
          f"{ms['postprocess']:.1f} ms post-process, {ms['output']:.1f} ms drawing/writing per "
          f"image at {h}x{w} on {predictor.device} (batch {batch}); {num_done} "
          f"{'frames' if src.is_video else 'images'}{skipped}{stopped} -> {out}")
    return summary


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame at the video's (width, height): streams may change resolution mid-way."""
    w, h = size
    return image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h),
                                                              interpolation=cv2.INTER_AREA)


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
            "edge": out / f"{name}_edge.png", "depth": out / f"{name}_depth.png",
            "normals": out / f"{name}_normals.png"}


def _video_output(src: CaptureSource, out: Path) -> Path:
    return out / f"{src.stem}.mp4"


def _check_no_overwrite(src: ImageSource | CaptureSource, out: Path) -> None:
    """Refuse, before any work, an output folder where results would replace the inputs."""
    if isinstance(src, CaptureSource):
        if src.path is None:
            return
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


def _maps(result: Result) -> dict[str, np.ndarray]:
    """The dense predictions as the images that are saved of them."""
    maps = {}
    if result.semseg is not None:
        maps["seg"] = result.semseg
    if result.edge is not None:
        maps["edge"] = np.clip(result.edge * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if result.depth is not None:
        maps["depth"] = np.clip(result.depth * DEPTH_PNG_SCALE + 0.5, 0, 65535).astype(np.uint16)
    if result.normals is not None:
        maps["normals"] = normals_to_rgb(result.normals)
    return maps


def _save_maps(out: Path, src: ImageSource | CaptureSource, frame: Frame, result: Result,
               annotated: np.ndarray) -> dict[str, str]:
    """Write the annotated image (image sets) and the map PNGs; their paths for the record."""
    if src.is_video:
        folder = out / f"{src.stem}_maps"
        folder.mkdir(exist_ok=True)
        paths = _image_outputs(folder, frame.name)
        files = _maps(result)
    else:
        paths = _image_outputs(out, frame.name)
        files = {"annotated": annotated, **_maps(result)}
    for key, image in files.items():
        if key == "seg":
            _write_class_map(paths[key], image)
        else:
            _write_image(paths[key], image)
    return {key: paths[key].relative_to(out).as_posix() for key in files}


def _coco_image_ids(names: list[str], indices: list[int], is_video: bool) -> list[int]:
    """COCO image ids: frame numbers for videos; numeric file names (COCO's own) when every
    name is one and they are distinct; else 1, 2, 3... in order."""
    if is_video:
        return indices
    if all(re.fullmatch(r"\d+", n) for n in names) and len({int(n) for n in names}) == len(
            names):
        return [int(n) for n in names]
    return list(range(1, len(names) + 1))


def _write_coco(out: Path, detections: list[tuple[str, int, dict[str, np.ndarray]]],
                is_video: bool, predictor: Predictor) -> dict[str, Any]:
    """``predictions_coco.json`` (category id = label + 1) and the id maps for the summary."""
    if "det" not in predictor.task_names:
        warnings.warn("--save-json: the model runs no detection head; no COCO results written",
                      stacklevel=3)
        return {"coco_results": None}
    names = [n for n, _, _ in detections]
    ids = _coco_image_ids(names, [i for _, i, _ in detections], is_video)
    results = coco_results([d for _, _, d in detections], ids)
    path = out / "predictions_coco.json"
    write_json_atomic(results, path)
    det_names = predictor.classes.get("det") or []
    num = predictor.model.heads["det"].num_classes
    return {"coco_results": str(path),
            "coco_image_ids": dict(zip(names, ids, strict=True)),
            "coco_categories": [{"id": k + 1, "name": det_names[k] if k < len(det_names)
                                 else str(k)} for k in range(num)]}
