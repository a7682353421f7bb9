#!/usr/bin/env python
"""Train a multi-task model: `python tools/train.py ...` is `mtvision train ...` (see --help)."""

import sys
from pathlib import Path

# Lets `python tools/train.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.train import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
