"""Evaluate a checkpoint: mtvision eval CONFIG CHECKPOINT [--out FILE.json] [--device D]
[--split NAME] [--baselines FILE.json|FILE.yaml [--exclude TASK ...]] [-o key=value ...]

CONFIG is a YAML file or a shipped config name (`mtvision configs`). With --baselines
(single-task results, e.g. from `mtvision train --single-task-baselines`, or a YAML of
published numbers such as configs/benchmarks/published/*.yaml) the results JSON and table also
give Delta_m, the mean relative improvement over them in percent.
`python tools/eval.py` is the same command."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtvision.cli import run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML file or shipped config name (e.g. demo)")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="results JSON (default: beside the checkpoint)")
    p.add_argument("--device", default="auto")
    p.add_argument("--split", default=None, help="dataset split (default: data.val_split)")
    p.add_argument("--baselines", default=None, metavar="FILE.json|FILE.yaml",
                   help="single-task results {task: {metric: value}}, or a YAML of published "
                        "numbers: adds Delta_m")
    p.add_argument("--exclude", action="append", default=[], metavar="TASK",
                   help="task left out of Delta_m (repeatable; model.aux_tasks always are)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad config, checkpoint or option)."""
    a = build_parser(prog).parse_args(argv)

    def run() -> None:
        from mtvision.config import load_config
        from mtvision.engine.evaluator import evaluate_checkpoint, format_table

        cfg = load_config(a.config, a.override)
        res = evaluate_checkpoint(cfg, a.checkpoint, a.out, a.device, a.split,
                                  progress=not a.no_progress, baselines=a.baselines,
                                  delta_m_exclude=a.exclude)
        print(format_table(res))
        print(f"results: {a.out or Path(a.checkpoint).with_name('metrics.json')}")

    return run_cli(run)
