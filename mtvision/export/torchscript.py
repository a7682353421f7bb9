"""TorchScript export of an ``ExportModule``: tracing (default) or scripting."""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from mtvision.export.wrapper import ExportError, ExportModule

METHODS = ("trace", "script")


def export_torchscript(module: ExportModule, example: Tensor, path: str | os.PathLike,
                       method: str = "trace") -> None:
    """Save ``module`` as TorchScript to ``path``.

    Tracing records the operations run on ``example``: the input size is then fixed (the batch
    size stays free). Scripting compiles the Python source and needs code TorchScript accepts,
    which the multi-task model's dict-returning heads are not; the error then says so.
    """
    if method not in METHODS:
        raise ExportError(f"unknown TorchScript method {method!r}; use trace or script")
    if method == "script":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                scripted = torch.jit.script(module)
        except Exception as e:  # noqa: BLE001 - the compiler raises many types; one line
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            first = first.rstrip(":").removesuffix(" at").strip()  # "...: <reason> at:"
            raise ExportError(
                f"this model cannot be scripted (TorchScript rejects its Python: {first[:200]}); "
                "use --method trace") from e
    else:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # Tracer warnings flag Python values frozen into the graph (the input size):
                # expected here, and the verification run checks the result. torch 2.14 also
                # flags torch.jit itself as deprecated (README: Export).
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(module, (example,), check_trace=False)
        except Exception as e:  # noqa: BLE001
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            raise ExportError(f"tracing the model failed: {type(e).__name__}: {first[:300]}"
                              ) from e
    scripted.save(os.fspath(path))
