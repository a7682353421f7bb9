#!/usr/bin/env python
"""Run a checkpoint on images, videos, streams: `python tools/infer.py ...` is `mtvision infer ...`
(see --help)."""

import sys
from pathlib import Path

# Lets `python tools/infer.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.infer import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
