"""Prove the GPU path on a CUDA machine: python tools/gpu_check.py [--out DIR]

Runs `pytest -m cuda`, a 300-iteration demo training with AMP (evaluated, with inference), the
kernel and balancing benchmarks on the GPU, and writes DIR/report.json (default
runs/gpu-check). Without CUDA it prints one line and exits 0. Same as `make gpu-check`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="report folder")
    a = p.parse_args(argv)
    from mtvision.benchmarks.gpu_check import run_gpu_check

    report = run_gpu_check(a.out)
    return 0 if report is None or report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
