#!/usr/bin/env python
"""Convert datasets or check one: `python tools/convert_dataset.py ...` is `mtvision convert ...`
(see --help)."""

import sys
from pathlib import Path

# Lets `python tools/convert_dataset.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.convert import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
