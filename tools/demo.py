#!/usr/bin/env python
"""The demo behind `make demo`: `python tools/demo.py ...` is `mtvision demo ...` (see --help)."""

import sys
from pathlib import Path

# Lets `python tools/demo.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.demo import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
