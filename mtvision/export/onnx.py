"""ONNX export of an ``ExportModule``.

Two exporters ship with torch 2.14 and both handle every head and the in-graph NMS:
``dynamo`` (``torch.onnx.export(dynamo=True)``: ``torch.export`` + onnxscript, torch's default
and maintained one, opset >= 18) and ``legacy`` (``dynamo=False``: TorchScript tracing, opset
17 or newer, deprecated by torch since 2.9 but about ten times faster to export).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from mtvision.export.wrapper import ExportError, ExportModule

INPUT_NAME = "images"
EXPORTERS = ("dynamo", "legacy")
DEFAULT_OPSET = 18
MIN_OPSET = {"dynamo": 18, "legacy": 17}  # dynamo: 17 silently stays 18
MAX_OPSET = {"legacy": 20}  # the highest the TorchScript-based exporter knows


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines and tracer warnings: the verification that
    follows every export is what says whether the graph is right.

    The legacy exporter also dumps its whole TorchScript graph (thousands of lines) to the
    process's stdout from C++ when it fails, hence the redirect of file descriptor 1 too.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def check_opset(opset: int, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    low, high = MIN_OPSET[exporter], MAX_OPSET.get(exporter)
    if opset < low or (high is not None and opset > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ExportError(f"opset {opset} is not supported by the {exporter} exporter "
                          f"(use {span})")


def export_onnx(module: ExportModule, example: Tensor, path: str | os.PathLike,
                opset: int = DEFAULT_OPSET, dynamic: bool = False,
                exporter: str = "dynamo") -> None:
    """Write ``module`` traced on ``example`` to ``path`` as one self-contained ONNX file.

    Input ``images``, outputs named after the tasks; ``dynamic`` makes the batch dimension
    (only) symbolic, named ``batch``.
    """
    check_opset(opset, exporter)
    names = module.output_names
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                shapes = {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}} if dynamic else None
                # Without dynamic shapes every size is specialised, as for the legacy exporter.
                program = torch.onnx.export(
                    module, (example,), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=names, dynamic_shapes=shapes,
                    external_data=False, optimize=True)
                # One file: the weights inline (ONNX's 2 GB protobuf limit applies), so that it
                # can be moved into place atomically.
                program.save(os.fspath(path), external_data=False)
            else:
                axes = ({INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
                        if dynamic else None)
                torch.onnx.export(
                    module, (example,), os.fspath(path), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=names, dynamic_axes=axes,
                    do_constant_folding=True)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporters raise anything; report it in one line
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"the {exporter} ONNX exporter failed: {type(e).__name__}: "
                          f"{first[:300]} (the {other} exporter may work: --exporter {other})"
                          ) from e
