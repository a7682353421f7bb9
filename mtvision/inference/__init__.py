"""Inference: predictions of a checkpoint on images and videos, drawn and saved.

``Predictor`` maps a checkpoint's predictions back to the original pixels; ``open_source``
streams frames from an image, a folder, a glob or a video; ``run_inference`` (behind
``tools/infer.py``) writes annotated media and ``predictions.jsonl``.
"""

from mtvision.inference.drawing import colorize_segmentation, draw_predictions, palette
from mtvision.inference.predictor import Predictor, Result
from mtvision.inference.runner import run_inference
from mtvision.inference.sources import Frame, InferenceError, open_source
from mtvision.inference.video import VideoWriter, write_video

__all__ = [
    "Frame",
    "InferenceError",
    "Predictor",
    "Result",
    "VideoWriter",
    "colorize_segmentation",
    "draw_predictions",
    "open_source",
    "palette",
    "run_inference",
    "write_video",
]
