"""Benchmarks: python tools/benchmark.py COMMAND [options]

    python tools/benchmark.py kernels [--quick] [--device D] [--out FILE.json]

kernels: the fused Triton losses against plain PyTorch, forward + backward (time, achieved
GB/s, peak memory); on the CPU only the PyTorch side is timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Lets `python tools/benchmark.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.cli import run_cli  # noqa: E402


def _non_negative_ms(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_ms(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _run_kernels(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.kernels import format_table, run_kernel_benchmark

    res = run_kernel_benchmark(a.case, a.device, a.quick, a.out, a.warmup, a.rep,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_kernels(sub: argparse._SubParsersAction) -> None:
    from mtvision.benchmarks.kernels import CASES

    p = sub.add_parser("kernels", help="fused Triton losses against plain PyTorch",
                       description="Time the fused Triton losses and their plain-PyTorch "
                                   "equivalents, forward + backward.")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes: a check, not a benchmark")
    p.add_argument("--out", default="runs/benchmark/kernels.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/kernels.json)")
    p.add_argument("--warmup", type=_non_negative_ms, default=25.0, metavar="MS",
                   help="warm-up time per callable in ms (default 25)")
    p.add_argument("--rep", type=_positive_ms, default=100.0, metavar="MS",
                   help="timed repetitions per callable in ms (default 100; on the CPU at "
                        "least 3 runs)")
    p.add_argument("--case", action="append", choices=CASES, default=None,
                   help="run only this case (repeatable; default: all)")
    p.set_defaults(run=_run_kernels)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One function per subcommand; a new benchmark adds its own here.
    _add_kernels(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad option, device or output file)."""
    a = build_parser().parse_args(argv)
    return run_cli(lambda: a.run(a))


if __name__ == "__main__":
    sys.exit(main())
