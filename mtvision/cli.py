"""Shared behaviour of the command-line tools: known errors become one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def known_errors() -> tuple[type[BaseException], ...]:
    from mtvision.data.io import DataError
    from mtvision.engine.checkpoint import CheckpointError
    from mtvision.engine.checks import TrainingError
    from mtvision.export.wrapper import ExportError
    from mtvision.inference import InferenceError
    from mtvision.registry import ConfigError

    return (ConfigError, DataError, CheckpointError, TrainingError, InferenceError, ExportError)


def run_cli(fn: Callable[[], object]) -> int:
    """Run ``fn``; print ``error: ...`` and return 2 for a known error, 130 on Ctrl-C."""
    try:
        fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except known_errors() as e:
        message = " ".join(str(e).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as e:
        # A write that fails where no code expected it (full disk on a log line, a plot): the
        # file and the reason, not a traceback. Checkpoints and results are written atomically,
        # so what was there before is intact.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    return 0
