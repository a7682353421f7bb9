"""``export_checkpoint``: checkpoint -> verified ONNX or TorchScript file + JSON report.

The file is written under a temporary name in the destination folder, run on a real image and
compared with PyTorch, and only then moved into place (``os.replace``); a failed check deletes
it, so a file at the destination is always one that passed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvision.data.io import read_image, write_json_atomic
from mtvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mtvision.export.onnx import DEFAULT_OPSET, INPUT_NAME, check_opset, export_onnx
from mtvision.export.torchscript import METHODS, export_torchscript
from mtvision.export.verify import (
    OnnxRunner,
    TorchScriptRunner,
    VerificationError,
    compare,
    format_shape,
    format_table,
    merge,
    require,
)
from mtvision.export.wrapper import ExportError, ExportModule, output_shapes

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# A real photograph: random noise leaves the score and NMS paths of detection nearly untested.
DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "tests" / "data" / "images" / \
    "000000343934.jpg"
# Max |exported - PyTorch| allowed, scaled by the output's magnitude (see verify.tolerance);
# float32 runtimes agree to ~1e-6 on these graphs, float16 to ~1e-3.
DEFAULT_ATOL = {False: 1e-4, True: 1e-2}

DESCRIPTIONS = {
    "det": "per location x1, y1, x2, y2 (model-input pixels, clipped) then one score per class "
           "sqrt(sigmoid(cls) * sigmoid(centerness)); threshold, top-k and NMS left to the user",
    "det_nms": "detections best first: x1, y1, x2, y2 (model-input pixels), score, label; "
               "rows past the last detection are zeros",
    "seg": "class logits at the input size; arg-max over the classes is the class map",
    "edge": "boundary probability (sigmoid of the fused HED map)",
    "cls": "class probabilities (softmax)",
    "cls_multi": "per-class probabilities (sigmoid, multi-label)",
    "depth": "depth in the training data's unit",
    "normals": "unit surface normals",
}


def _image_size(imgsz: int | tuple[int, ...] | list[int] | None) -> tuple[int, int] | None:
    """``--imgsz`` H or (H, W) as (H, W); the Predictor checks it against the model's stride."""
    if imgsz is None:
        return None
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if len(imgsz) in (1, 2):
        return int(imgsz[0]), int(imgsz[-1])
    raise ExportError(f"--imgsz takes H or H W, got {list(imgsz)}")


def _destination(checkpoint: Path, out: str | os.PathLike | None, fmt: str) -> Path:
    path = Path(out) if out is not None else checkpoint.with_name(checkpoint.stem + SUFFIXES[fmt])
    if path.is_dir():
        path = path / (checkpoint.stem + SUFFIXES[fmt])
    if path.resolve() == checkpoint.resolve():
        raise ExportError(f"--out {path} is the checkpoint itself; choose another file name")
    if not path.parent.is_dir():
        raise ExportError(f"output folder {path.parent} does not exist")
    return path


def _describe(model: Any, task: str, nms: bool) -> str:
    kind = model.heads[task].task
    if kind == "det" and nms:
        return DESCRIPTIONS["det_nms"]
    if kind == "cls" and model.heads[task].multi_label:
        return DESCRIPTIONS["cls_multi"]
    return DESCRIPTIONS[kind]


def export_checkpoint(checkpoint: str | os.PathLike, format: str = "onnx",  # noqa: A002
                      out: str | os.PathLike | None = None,
                      imgsz: int | tuple[int, ...] | list[int] | None = None,
                      dynamic: bool = False, half: bool = False, nms: bool = False,
                      opset: int = DEFAULT_OPSET, method: str = "trace",
                      atol: float | None = None, image: str | os.PathLike | None = None,
                      exporter: str = "dynamo", tasks: list[str] | None = None
                      ) -> dict[str, Any]:
    """Export ``checkpoint`` and verify the file on a real image; returns the report, also
    written as JSON to ``<file>.json``.

    ``format`` onnx (``exporter`` dynamo or legacy, ``opset``) or torchscript (``method`` trace
    or script); ``imgsz`` H or (H, W) overrides the training input size; ``dynamic`` makes the
    batch size free (verified with a batch of 2); ``half`` exports float16 weights (CUDA
    only); ``nms`` puts the detection head's thresholding and NMS into the graph. ``atol``:
    see ``verify.tolerance``. Raises ``ExportError`` (``VerificationError`` when the check
    fails); the checkpoint loader raises ``InferenceError`` / ``CheckpointError``.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; use onnx or torchscript")
    if format == "onnx":
        check_opset(opset, exporter)
        require("onnxruntime", "checking an ONNX export")
        if exporter == "dynamo":
            require("onnxscript", "the dynamo ONNX exporter")
    elif method not in METHODS:
        raise ExportError(f"unknown TorchScript method {method!r}; use trace or script")
    if half and not torch.cuda.is_available():
        raise ExportError("--half exports float16 on a CUDA GPU and this machine has none; "
                          "drop --half")
    atol = DEFAULT_ATOL[half] if atol is None else float(atol)
    if not atol >= 0:
        raise ExportError(f"--atol must be >= 0, got {atol}")

    from mtvision.inference import Predictor  # here: it pulls in cv2 and the video code

    ckpt = Path(checkpoint)
    predictor = Predictor(ckpt, device="cuda" if half else "cpu",
                          image_size=_image_size(imgsz))
    model = predictor.model
    stride, size = predictor.max_stride, predictor.image_size
    dest = _destination(ckpt, out, format)
    module = ExportModule(model, tasks, nms=nms).eval()
    if half:
        model.half()

    if image is None and not DEFAULT_IMAGE.is_file():
        raise ExportError(f"the default check image {DEFAULT_IMAGE} is missing (an installed "
                          "package without the repository's tests/data); pass --image PATH")
    photo = read_image(image if image is not None else DEFAULT_IMAGE)
    # Dynamic batch: exported with a batch of 2 (torch.export specialises a size of 1) and
    # verified with 1 and 2, the second image the mirrored photo.
    batch, letterboxes = predictor.preprocess([photo, np.ascontiguousarray(photo[:, ::-1])])
    batch = batch.half() if half else batch.float()
    checks = [batch[:1], batch] if dynamic else [batch[:1]]
    example = checks[-1]
    with torch.no_grad():
        references = [module(x) for x in checks]

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        start = time.perf_counter()
        if format == "onnx":
            export_onnx(module, example, tmp, opset=opset, dynamic=dynamic, exporter=exporter)
        else:
            export_torchscript(module, example, tmp, method=method)
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        runner = (OnnxRunner(tmp, half=half) if format == "onnx"
                  else TorchScriptRunner(tmp, batch.device))
        names = module.output_names
        if format == "onnx":
            if runner.output_names != names:
                raise ExportError(f"the exported outputs are {runner.output_names}, expected "
                                  f"{names}")
            if runner.opset != opset:
                raise ExportError(f"the {exporter} exporter wrote opset {runner.opset}, not the "
                                  f"{opset} asked for")
        unordered = [t for t in names if nms and model.heads[t].task == "det"]
        rows = merge([compare(names, ref, runner(x), atol, unordered)
                      for x, ref in zip(checks, references, strict=True)])
        verify_seconds = time.perf_counter() - start
        bat: int | str = "batch" if dynamic else 1
        shapes = output_shapes(model, names, size, nms, batch=bat)
        for row in rows:
            row["shape"] = shapes[row["name"]]
        failed = [r for r in rows if not r["ok"]]
        if failed:
            detail = "; ".join(
                f"{r['name']}: " + (r.get("problem") or f"max abs diff {r['max_abs_diff']:.3g} "
                                                       f"> tolerance {r['tolerance']:.3g}")
                for r in failed)
            raise VerificationError(f"the exported model differs from PyTorch ({detail}); "
                                    f"{dest} was not written", rows)
        report = _report(predictor, module, format, dest, ckpt, size, stride, rows, atol,
                         image if image is not None else DEFAULT_IMAGE, letterboxes[0],
                         dynamic=dynamic, half=half, nms=nms, opset=opset,
                         exporter=exporter, method=method, runtime=runner.runtime,
                         export_seconds=export_seconds, verify_seconds=verify_seconds)
        del runner  # onnxruntime keeps the file open on some platforms
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a model file is meant to be shared
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    write_json_atomic(report, report["report"], indent=2)
    return report


def _report(predictor: Any, module: ExportModule, fmt: str, dest: Path, ckpt: Path,
            size: tuple[int, int], stride: int, rows: list[dict[str, Any]], atol: float,
            image: str | os.PathLike, lb: Any, *, dynamic: bool, half: bool,
            nms: bool, opset: int, exporter: str, method: str, runtime: str,
            export_seconds: float, verify_seconds: float) -> dict[str, Any]:
    model = module.model
    h, w = size
    outputs = []
    for row in rows:
        task = row["name"]
        outputs.append({"name": task, "task": model.heads[task].task, "shape": row["shape"],
                        "dtype": "float32", "description": _describe(model, task, nms),
                        "max_abs_diff": row["max_abs_diff"], "tolerance": row["tolerance"],
                        "ok": row["ok"]})
    heads: dict[str, Any] = {}
    for task in module.tasks:
        head = model.heads[task]
        info: dict[str, Any] = {"head": type(head).__name__}
        if hasattr(head, "num_classes"):
            info["num_classes"] = int(head.num_classes)
        if head.task == "det":
            info.update(strides=[int(s) for s in head.strides],
                        num_locations=sum((h // s) * (w // s) for s in head.strides),
                        score_thresh=head.score_thresh, nms_thresh=head.nms_thresh,
                        topk_candidates=head.topk_candidates,
                        max_detections=head.max_detections, nms_in_graph=nms)
        if head.task == "cls":
            info["multi_label"] = bool(head.multi_label)
        heads[task] = info
    return {
        "format": fmt,
        "file": str(dest),
        "report": str(dest) + ".json",
        "checkpoint": str(ckpt),
        "opset": opset if fmt == "onnx" else None,
        "exporter": (f"torch.onnx {exporter}" if fmt == "onnx" else f"torch.jit.{method}"),
        "torch": torch.__version__,
        "dtype": "float16" if half else "float32",
        "dynamic_batch": dynamic,
        "input": {"name": INPUT_NAME, "shape": ["batch" if dynamic else 1, 3, h, w],
                  "dtype": "float16" if half else "float32", "layout": "NCHW, RGB"},
        "outputs": outputs,
        "image_size": [h, w],
        "max_stride": stride,
        "classes": {t: predictor.classes.get(t) for t in module.tasks},
        "heads": heads,
        "normalize": {"mean": [round(255 * m, 6) for m in IMAGENET_MEAN],
                      "std": [round(255 * s, 6) for s in IMAGENET_STD],
                      "formula": "(rgb_uint8 - mean) / std, per channel"},
        "letterbox": {
            "scale": "min(H / h, W / w) for an h x w image",
            "resize": "to new_h = max(1, round(h * scale)), new_w = max(1, round(w * scale)) "
                      "(Python round, half to even), bilinear (cv2.INTER_LINEAR)",
            "pad": "centred, black (0) before normalising: pad_top = (H - new_h) // 2 "
                   "at the top, pad_left = (W - new_w) // 2 on the left, the rest after",
            "inverse": "x = (x_input - pad_left) / scale, y = (y_input - pad_top) / scale",
            "example": {"image": str(image), "orig_size": list(lb.orig_size), "scale": lb.scale,
                        "resized": list(lb.resized), "pad_left_top": list(lb.pad)},
        },
        "verification": {"image": str(image), "batch_sizes": [1, 2] if dynamic else [1],
                         "runtime": runtime, "atol": atol,
                         "tolerance": "atol * max(1, max |PyTorch output|)"},
        "seconds": {"export": round(export_seconds, 3), "verify": round(verify_seconds, 3)},
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary ``tools/export.py`` prints."""
    inp = report["input"]
    what = (f"opset {report['opset']}, {report['exporter']}" if report["format"] == "onnx"
            else report["exporter"])
    head = (f"{report['format']}: {report['file']} ({what}, input {inp['name']} "
            f"{format_shape(inp['shape'])} {inp['dtype']}, "
            f"exported in {report['seconds']['export']:.1f} s)")
    return "\n".join([head, format_table(report["outputs"]),
                      f"verified with {report['verification']['runtime']} on "
                      f"{report['verification']['image']}; report: {report['report']}"])
