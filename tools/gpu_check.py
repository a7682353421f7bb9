#!/usr/bin/env python
"""Prove the GPU path: `python tools/gpu_check.py [--out DIR]` is `mtvision benchmark
gpu-check` (and `make gpu-check`): on a CUDA machine the cuda tests, a 300-iteration AMP demo,
the kernel and balancing benchmarks and one report; elsewhere one line, exit 0."""

import sys
from pathlib import Path

# Lets `python tools/gpu_check.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.commands.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["gpu-check", *sys.argv[1:]], prog="tools/gpu_check.py"))
