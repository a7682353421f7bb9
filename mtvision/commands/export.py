"""Export a checkpoint to ONNX or TorchScript, verified against PyTorch on a real image.

    mtvision export runs/exp/best.pt --format onnx --dynamic
    mtvision export runs/exp/best.pt --format torchscript --imgsz 512 640 --nms

Writes the model (``best.onnx`` / ``best.torchscript.pt`` beside the checkpoint unless
``--out``) and ``<model>.json`` describing its input, outputs and pre-processing; prints one
row per output with the largest difference from PyTorch. Exit status 2 on a bad checkpoint or
option, or when the exported model disagrees with PyTorch (no file is then written).
"""

from __future__ import annotations

import argparse
import sys

from mtvision.cli import run_cli
from mtvision.export import (
    DEFAULT_OPSET,
    EXPORTERS,
    VerificationError,
    export_checkpoint,
    format_report,
    format_table,
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint file written by training (.pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (default) or torchscript")
    p.add_argument("--imgsz", type=int, nargs="+", metavar=("H", "W"), default=None,
                   help="input size H [W] (default: the training data.image_size); a multiple "
                        "of the model's largest stride")
    p.add_argument("--dynamic", action="store_true", help="free batch dimension")
    p.add_argument("--half", action="store_true", help="float16 weights and input (CUDA only)")
    p.add_argument("--nms", action="store_true",
                   help="detection output after the head's threshold, top-k and NMS: "
                        "[B, max_detections, 6] (x1, y1, x2, y2, score, label)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated heads to export, e.g. det,seg (default: all)")
    p.add_argument("--out", default=None,
                   help="output file or folder (default: beside the checkpoint)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; the legacy exporter takes 17-20)")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="ONNX exporter: dynamo (torch.export, default) or legacy (TorchScript "
                        "tracing, faster)")
    p.add_argument("--method", choices=("trace", "script"), default="trace",
                   help="TorchScript by tracing (default) or scripting")
    p.add_argument("--atol", type=float, default=None,
                   help="largest allowed |exported - PyTorch|, times max(1, |output|) "
                        "(default 1e-4; 1e-2 with --half)")
    p.add_argument("--image", default=None,
                   help="RGB image the exported model is checked on (default: a COCO photo "
                        "under tests/data/images)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status (0 when the export was written and verified)."""
    args = build_parser(prog).parse_args(argv)
    if args.imgsz is not None and len(args.imgsz) > 2:
        print(f"error: --imgsz takes H or H W, got {len(args.imgsz)} numbers", file=sys.stderr)
        return 2

    def run() -> None:
        try:
            report = export_checkpoint(
                args.checkpoint, format=args.format, out=args.out, imgsz=args.imgsz,
                dynamic=args.dynamic, half=args.half, nms=args.nms, opset=args.opset,
                method=args.method, atol=args.atol, image=args.image, exporter=args.exporter,
                tasks=[t.strip() for t in args.tasks.split(",") if t.strip()]
                if args.tasks else None)
        except VerificationError as e:
            print(format_table(e.rows), file=sys.stderr)  # what differed, above the error line
            raise
        print(format_report(report))

    return run_cli(run)

