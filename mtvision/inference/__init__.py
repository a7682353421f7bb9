"""Inference: predictions of a checkpoint on images, videos and streams, drawn and saved.

``Predictor`` maps a checkpoint's predictions back to the original pixels; ``open_source``
streams frames from an image, a folder, a glob, an image list, a video, a webcam or a network
stream; ``run_inference`` (behind ``tools/infer.py``) writes annotated media,
``predictions.jsonl`` and the COCO results file.
"""

from mtvision.inference.display import Display, display_problem
from mtvision.inference.drawing import (
    colorize_segmentation,
    draw_predictions,
    normals_to_rgb,
    palette,
)
from mtvision.inference.predictor import Predictor, Result
from mtvision.inference.runner import run_inference
from mtvision.inference.sources import (
    CaptureSource,
    Frame,
    ImageSource,
    InferenceError,
    StreamSource,
    VideoSource,
    open_source,
)
from mtvision.inference.video import VideoWriter, write_video

__all__ = [
    "CaptureSource",
    "Display",
    "Frame",
    "ImageSource",
    "InferenceError",
    "Predictor",
    "Result",
    "StreamSource",
    "VideoSource",
    "VideoWriter",
    "colorize_segmentation",
    "display_problem",
    "draw_predictions",
    "normals_to_rgb",
    "open_source",
    "palette",
    "run_inference",
    "write_video",
]
