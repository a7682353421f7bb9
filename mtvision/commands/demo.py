"""The demo behind `make demo`: mtvision demo [CONFIG] [--device D] [-o key=value ...]

Generates the synthetic shapes data, trains CONFIG (default: the shipped demo config),
evaluates the best checkpoint and runs inference on images and a video.
`python tools/demo.py` is the same command."""

from __future__ import annotations

import argparse

from mtvision.cli import run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="demo",
                   help="YAML file or shipped config name (default: demo)")
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status."""
    a = build_parser(prog).parse_args(argv)

    def run() -> None:
        from mtvision.engine.demo import run_demo

        run_demo(a.config, a.override, a.device)

    return run_cli(run)
