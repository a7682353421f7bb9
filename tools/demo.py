"""The demo behind `make demo`: python tools/demo.py [CONFIG] [--device D] [-o key=value ...]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.cli import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("config", nargs="?", default="configs/demo.yaml")
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)

    def run() -> None:
        from mtvision.engine.demo import run_demo

        run_demo(a.config, a.override, a.device)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
