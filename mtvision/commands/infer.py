"""Run a checkpoint on images, a video, a webcam or a stream; write annotated media and JSON.

    mtvision infer runs/exp/best.pt street.mp4 --out runs/infer/street
    mtvision infer runs/exp/best.pt "photos/*.jpg" --conf 0.3 --save-json
    mtvision infer runs/exp/best.pt 0 --show                  # webcam 0
    mtvision infer runs/exp/best.pt rtsp://camera/live --vid-stride 2

SOURCE: an image, a folder, a glob (quote it), a .txt list of image paths, a video file, a
webcam index or a stream URL (rtsp, rtmp, http(s), udp, tcp, srt). Writes annotated media,
``predictions.jsonl`` and ``summary.json`` (and ``predictions_coco.json`` with --save-json)
into ``--out``.
"""

from __future__ import annotations

import argparse
import sys

from mtvision.cli import run_cli
from mtvision.inference import run_inference


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError("give at least one task, e.g. det,seg")
    return tasks


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint file written by training (.pt)")
    p.add_argument("source", help="image, folder, glob (quoted), .txt list, video, webcam "
                                  "index or stream URL")
    p.add_argument("--out", default="runs/infer", help="output folder (default: runs/infer)")
    p.add_argument("--tasks", type=_tasks, default=None,
                   help="comma-separated heads to run, e.g. det,seg (default: all)")
    p.add_argument("--conf", "--score-thresh", dest="conf", type=_fraction, default=0.3,
                   help="keep boxes scoring at least this (default 0.3; evaluation keeps "
                        "everything above the head's own 0.05)")
    p.add_argument("--iou", type=_fraction, default=None,
                   help="NMS IoU threshold (default: the head's, 0.6 for FCOS)")
    p.add_argument("--imgsz", type=_positive_int, nargs="+", default=None, metavar="N",
                   help="input size: N (square) or H W, multiples of the backbone stride "
                        "(default: the training size); images are letterboxed to it")
    p.add_argument("--batch", type=_positive_int, default=1, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    p.add_argument("--save-json", action="store_true",
                   help="also write the detections in the COCO results format")
    p.add_argument("--no-save-media", "--no-media", dest="no_save_media", action="store_true",
                   help="write only the JSON files (no annotated images or video, no maps)")
    p.add_argument("--vid-stride", type=_positive_int, default=1,
                   help="predict on every N-th frame of a video or stream")
    p.add_argument("--max-frames", type=_positive_int, default=None,
                   help="stop after this many images or frames")
    p.add_argument("--show", action="store_true",
                   help="show annotated frames in a window (needs a GUI build of OpenCV and a "
                        "display; q stops)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad checkpoint, source, option or file)."""
    args = build_parser(prog).parse_args(argv)
    if args.imgsz is not None and len(args.imgsz) > 2:
        print("error: --imgsz takes N or H W", file=sys.stderr)
        return 2
    size = None if args.imgsz is None else (args.imgsz[0], args.imgsz[-1])
    return run_cli(lambda: run_inference(
        args.checkpoint, args.source, args.out, device=args.device, batch=args.batch,
        save_media=not args.no_save_media, max_frames=args.max_frames, score_thresh=args.conf,
        iou_thresh=args.iou, image_size=size, tasks=args.tasks, half=args.half,
        save_json=args.save_json, vid_stride=args.vid_stride, show=args.show))

