"""Train a multi-task model: mtvision train CONFIG [--work-dir DIR] [--resume]
[--device auto|cpu|cuda] [--single-task-baselines] [-o key=value ...]

CONFIG is a YAML file or the name of a config shipped with mtvision (`mtvision configs` lists
them), e.g. demo or benchmarks/nyuv2_resnet50. --single-task-baselines trains instead one model
per task head of the config (the same data and schedule, in WORK_DIR/single_<task>), evaluates
each and writes WORK_DIR/baselines.json for `mtvision eval --baselines` (Delta_m); with --resume,
finished tasks are kept. `python tools/train.py` is the same command."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtvision.cli import run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML file or shipped config name (e.g. demo)")
    p.add_argument("--work-dir", default=None, help="output folder (default: runs/CONFIG_NAME)")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.pt")
    p.add_argument("--device", default="auto")
    p.add_argument("--single-task-baselines", action="store_true",
                   help="train and evaluate one single-task model per head; write baselines.json")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad config, file or option)."""
    a = build_parser(prog).parse_args(argv)

    def run() -> None:
        from mtvision.config import load_config
        from mtvision.engine.trainer import train

        cfg = load_config(a.config, a.override)
        work_dir = a.work_dir or cfg["work_dir"] or f"runs/{Path(a.config).stem}"
        if a.single_task_baselines:
            from mtvision.engine.baselines import BASELINES_FILE, train_single_task_baselines

            train_single_task_baselines(cfg, work_dir, a.device, progress=not a.no_progress,
                                        resume=a.resume)
            print(f"baselines: {Path(work_dir) / BASELINES_FILE}")
            return
        train(cfg, work_dir, a.resume, a.device, progress=not a.no_progress)

    return run_cli(run)
