#!/usr/bin/env python
"""Export a checkpoint to ONNX or TorchScript: `python tools/export.py ...` is `mtvision export ...`
(see --help)."""

import sys
from pathlib import Path

# Lets `python tools/export.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.export import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
