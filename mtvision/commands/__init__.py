"""The ``mtvision`` console command: ``mtvision COMMAND [options]``.

Each command is a module here with ``build_parser(prog)`` and ``main(argv, prog)``; the scripts
in the repository's ``tools/`` call the same functions, so ``python tools/train.py ...`` and
``mtvision train ...`` take the same arguments.
"""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata

from mtvision.registry import closest

# name -> (module under mtvision.commands, one-line summary); the order of `mtvision --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model from a config (a YAML file or a shipped config name)"),
    "eval": ("eval", "evaluate a checkpoint on a config's validation split"),
    "infer": ("infer", "predict on images, a folder, a list, a video, a webcam or a stream"),
    "export": ("export", "export a checkpoint to ONNX or TorchScript, verified against PyTorch"),
    "benchmark": ("benchmark", "time the kernels, the balancing methods or inference"),
    "convert": ("convert", "convert datasets between formats, or validate one"),
    "demo": ("demo", "generate the shapes data, train, evaluate and run inference"),
    "configs": ("configs", "list the configs shipped with mtvision"),
}


def help_text() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        "usage: mtvision COMMAND [options]     (mtvision COMMAND --help: its options)\n"
        "       mtvision --version\n\n"
        "Multi-task computer vision: detection, segmentation, edges, classification, depth\n"
        "and normals on one shared backbone.\n\n"
        f"commands:\n{rows}\n\n"
        "options:\n"
        "  -h, --help     show this message\n"
        "  -V, --version  versions of mtvision, torch, torchvision, triton, timm and CUDA\n\n"
        "`python tools/NAME.py` in a checkout runs the same commands (convert: "
        "tools/convert_dataset.py).")


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def version_text() -> str:
    """One line per component: mtvision, torch, torchvision, triton, timm, CUDA, Python."""
    import torch

    import mtvision

    if torch.version.cuda is None:
        cuda = "absent (CPU-only torch build)"
    elif torch.cuda.is_available():
        n = torch.cuda.device_count()
        cuda = (f"{torch.version.cuda} ({n} device{'s' if n > 1 else ''}: "
                f"{torch.cuda.get_device_name(0)})")
    else:
        cuda = f"{torch.version.cuda} (no device visible)"
    lines = [("mtvision", mtvision.__version__), ("torch", torch.__version__),
             ("torchvision", _dist_version("torchvision")), ("triton", _dist_version("triton")),
             ("timm", _dist_version("timm")), ("CUDA", cuda),
             ("python", platform.python_version())]
    return "\n".join(f"{name} {value}" for name, value in lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mtvision`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(help_text(), file=sys.stderr)
        return 2
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help"):
        print(help_text())
        return 0
    if first in ("-V", "--version"):
        print(version_text())
        return 0
    if first not in COMMANDS:
        print(f"error: unknown command '{first}'{closest(first, list(COMMANDS))}; commands: "
              f"{', '.join(COMMANDS)} (mtvision --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(f"mtvision.commands.{COMMANDS[first][0]}")
    return module.main(rest, prog=f"mtvision {first}")


__all__ = ["COMMANDS", "help_text", "main", "version_text"]
