"""Running an exported model and comparing it with PyTorch, output by output.

An export can succeed and still compute something else (a Python branch frozen by tracing,
an operator the runtime implements differently); only running the file tells.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtvision.export.wrapper import ExportError


class VerificationError(ExportError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance; ``rows`` holds
    the comparison (see ``compare``) so that the caller can show it."""

    def __init__(self, message: str, rows: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.rows = rows


def require(module: str, what: str) -> Any:
    """Import an optional dependency of the export, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{what} needs the '{module}' package: pip install -e '.[export]' "
                          "(onnx, onnxruntime, onnxscript)") from None


class OnnxRunner:
    """An onnxruntime session on the CPU (CUDA first when the model is float16 and the
    installed onnxruntime has it)."""

    def __init__(self, path: str | os.PathLike, half: bool = False) -> None:
        onnx = require("onnx", "ONNX export")
        ort = require("onnxruntime", "checking an ONNX export")
        try:
            graph = onnx.load(os.fspath(path))
            onnx.checker.check_model(graph, full_check=False)
        except Exception as e:  # noqa: BLE001 - onnx raises its own ValidationError types
            raise ExportError(f"the exported ONNX graph is invalid: {str(e).splitlines()[0]}"
                              ) from e
        # What the file declares, not what was asked for: an exporter may keep another opset.
        self.opset = next((int(o.version) for o in graph.opset_import
                           if o.domain in ("", "ai.onnx")), None)
        del graph
        providers = ["CPUExecutionProvider"]
        if half and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=providers)
        except Exception as e:  # noqa: BLE001
            hint = ("; checking a float16 model needs onnxruntime-gpu (CUDAExecutionProvider)"
                    if half and providers == ["CPUExecutionProvider"] else "")
            raise ExportError(f"onnxruntime cannot load the exported model: "
                              f"{str(e).splitlines()[0][:300]}{hint}") from e
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.runtime = f"onnxruntime {ort.__version__} ({self.session.get_providers()[0]})"

    def __call__(self, images: Tensor) -> list[np.ndarray]:
        try:
            return self.session.run(None, {self.input_name: images.detach().cpu().numpy()})
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"onnxruntime failed to run the exported model on a "
                              f"{list(images.shape)} batch: {str(e).splitlines()[0][:300]}"
                              ) from e


class TorchScriptRunner:
    """``torch.jit.load`` of the exported file, on the device of the inputs."""

    def __init__(self, path: str | os.PathLike, device: torch.device) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                self.module = torch.jit.load(os.fspath(path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"torch.jit.load cannot read the exported model: "
                              f"{str(e).splitlines()[0][:300]}") from e
        self.runtime = f"torch.jit {torch.__version__}"

    def __call__(self, images: Tensor) -> list[np.ndarray]:
        try:
            with torch.no_grad():
                out = self.module(images)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"the exported TorchScript model failed on a "
                              f"{list(images.shape)} batch: {str(e).splitlines()[0][:300]}"
                              ) from e
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [t.detach().float().cpu().numpy() for t in out]


def tolerance(reference: np.ndarray, atol: float) -> float:
    """``atol`` scaled by the output's magnitude (when above 1): box coordinates in pixels or
    depths in metres carry float rounding proportional to their size, probabilities do not."""
    peak = float(np.abs(reference).max()) if reference.size else 0.0
    return atol * max(1.0, peak)


def _unordered_diff(reference: np.ndarray, got: np.ndarray) -> float:
    """Largest distance from a row of either [B, K, F] array to its nearest row in the other,
    per image: the detections after NMS as a set, since two boxes whose scores differ by a
    rounding error may come out in either order."""
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        d = np.abs(ref[:, None, :] - out[None, :, :]).max(-1)
        worst = max(worst, float(d.min(1).max(initial=0.0)), float(d.min(0).max(initial=0.0)))
    return worst


def compare(names: Sequence[str], reference: Sequence[Tensor], exported: Sequence[np.ndarray],
            atol: float, unordered: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per output: ``name``, ``shape`` (exported), ``max_abs_diff``, ``tolerance``,
    ``ok``; a shape mismatch or a NaN is never ok. Outputs in ``unordered`` ([B, K, F] rows,
    the in-graph NMS detections) are compared as sets of rows per image."""
    if len(exported) != len(names):
        raise ExportError(f"the exported model returns {len(exported)} outputs, expected "
                          f"{len(names)} ({', '.join(names)})")
    rows = []
    for name, ref, got in zip(names, reference, exported, strict=True):
        ref_np = ref.detach().float().cpu().numpy()
        got = np.asarray(got, dtype=np.float32)
        row: dict[str, Any] = {"name": name, "shape": list(got.shape),
                               "tolerance": tolerance(ref_np, atol)}
        if got.shape != ref_np.shape:
            row.update(max_abs_diff=float("inf"), ok=False,
                       problem=f"shape {list(got.shape)}, PyTorch gives {list(ref_np.shape)}")
        else:
            diff = np.abs(got - ref_np)
            finite = np.isfinite(ref_np)
            # Elements PyTorch itself gives as NaN / inf are skipped; one elsewhere fails.
            bad = ~np.isfinite(got) & finite
            worst = float(diff[finite].max()) if finite.any() else 0.0
            if name in unordered and worst > 0 and not bad.any():
                worst = min(worst, _unordered_diff(ref_np, got))
            row.update(max_abs_diff=float("inf") if bad.any() else worst)
            row["ok"] = bool(row["max_abs_diff"] <= row["tolerance"])
        rows.append(row)
    return rows


def merge(runs: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of several verification batches as one: per output the worst of them (a
    failing one first, then the largest difference)."""
    return [dict(max(rows, key=lambda r: (not r["ok"], r["max_abs_diff"])))
            for rows in zip(*runs, strict=True)]


def format_shape(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``compare`` rows."""
    header = ("output", "shape", "max abs diff", "tolerance", "ok")
    lines = [header] + [
        (r["name"], format_shape(r["shape"]), f"{r['max_abs_diff']:.3g}",
         f"{r['tolerance']:.3g}", "yes" if r["ok"] else "NO" + (f" ({r['problem']})"
                                                                 if "problem" in r else ""))
        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)),
                                line[-1]]) for line in lines)
