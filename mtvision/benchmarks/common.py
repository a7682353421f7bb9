"""What the benchmark subcommands share: the device's name and an early check of the output."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtvision import kernels
from mtvision.data.io import write_json_atomic
from mtvision.engine.device import resolve_device
from mtvision.registry import ConfigError


def device_name(dev: torch.device) -> str:
    """The GPU's name, or the CPU's architecture and torch's thread count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def triton_version() -> str | None:
    """Triton's version for the results, None where it is not installed."""
    if not kernels.triton_available():
        return None
    import triton

    return triton.__version__


def check_writable(out: str | os.PathLike[str]) -> None:
    """Fail before a long run, not after it, when ``out`` cannot be written."""
    p = Path(out)
    if p.is_dir():
        raise ConfigError(f"cannot write results to '{p}': it is a directory")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        # A real file rather than os.access, which says yes to root on a read-only mount.
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"cannot write results to '{p}': {e.strerror or e}") from None


def start_run(device: str, out: str | os.PathLike[str] | None) -> torch.device:
    """The device to benchmark on (compiled kernels only: interpreted ones on CUDA would time
    the interpreter), with ``out`` checked before a long run rather than after it."""
    dev = resolve_device(device)
    if dev.type == "cuda" and kernels.INTERPRET:
        raise ConfigError("TRITON_INTERPRET=1 is set: the kernels would be interpreted, not "
                          "compiled; unset it to benchmark on CUDA")
    if out is not None:
        check_writable(out)
    return dev


def write_results(results: dict[str, Any], out: str | os.PathLike[str] | None) -> None:
    """Write ``results`` as JSON to ``out`` atomically (nothing when ``out`` is None)."""
    if out is None:
        return
    try:
        write_json_atomic(results, out, indent=2)
    except OSError as e:
        raise ConfigError(f"cannot write results to '{out}': {e.strerror or e}") from None
