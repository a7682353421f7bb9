"""List the configs shipped with mtvision: mtvision configs [--paths]

Any of these names can be given where a command takes a CONFIG (mtvision train demo,
mtvision train benchmarks/nyuv2_resnet50); a path to a YAML file works as well. Copy one
(--paths shows where it lives) to start your own; its _base_ entries are relative to it."""

from __future__ import annotations

import argparse

from mtvision.cli import run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paths", action="store_true", help="also print each config's file")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; prints one config name per line."""
    a = build_parser(prog).parse_args(argv)

    def run() -> None:
        from mtvision.config import config_dir, list_configs, resolve_config

        names = list_configs()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:<{width}}  {resolve_config(name)}" if a.paths else name)
        if a.paths:
            print(f"(in {config_dir()})")

    return run_cli(run)
