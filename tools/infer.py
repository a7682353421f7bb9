#!/usr/bin/env python
"""Run a checkpoint on an image, a folder or glob of images, or a video.

    python tools/infer.py runs/exp/best.pt street.mp4 --out runs/infer/street
    python tools/infer.py runs/exp/best.pt "photos/*.jpg" --score-thresh 0.3

Writes annotated media, ``predictions.jsonl`` and ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Lets `python tools/infer.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.data.io import DataError  # noqa: E402
from mtvision.engine.checkpoint import CheckpointError  # noqa: E402
from mtvision.inference import InferenceError, run_inference  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint file written by training (.pt)")
    p.add_argument("source", help="image file, folder, glob pattern (quote it) or video file")
    p.add_argument("--out", default="runs/infer", help="output folder (default: runs/infer)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="keep boxes scoring at least this (default 0.3; evaluation keeps "
                        "everything above the head's own 0.05)")
    p.add_argument("--batch", type=_positive_int, default=1, help="images per forward pass")
    p.add_argument("--max-frames", type=_positive_int, default=None,
                   help="stop after this many images or frames")
    p.add_argument("--no-media", action="store_true",
                   help="write only predictions.jsonl and summary.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad checkpoint, source or data file)."""
    args = build_parser().parse_args(argv)
    try:
        run_inference(args.checkpoint, args.source, args.out, device=args.device,
                      batch=args.batch, save_media=not args.no_media,
                      max_frames=args.max_frames, score_thresh=args.score_thresh)
    except (InferenceError, DataError, CheckpointError) as e:
        message = " ".join(str(e).split())  # one line, whatever the exception held
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
