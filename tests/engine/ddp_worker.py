"""A training worker for the torchrun tests: ``tools/train.py`` plus one injected crash.

    torchrun ... tests/engine/ddp_worker.py CONFIG WORK_DIR CRASH_AT [-o key=value ...]

With CRASH_AT > 0, rank 1 of the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0) dies with
``os._exit(1)`` before training iteration CRASH_AT, as a lost machine would; torchrun's elastic
agent then restarts every worker (``--max-restarts``) and the trainer resumes from ``last.pt``.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mtvision.config import load_config  # noqa: E402
from mtvision.engine import distributed as dist  # noqa: E402
from mtvision.engine.trainer import Trainer, train  # noqa: E402


def main() -> None:
    config, work_dir, crash_at, *rest = sys.argv[1:]
    overrides = [rest[i + 1] for i in range(0, len(rest), 2) if rest[i] == "-o"]
    crash_at = int(crash_at)
    if crash_at and dist.restart_count() == 0:
        real = Trainer.train_step

        def step(self, batch):
            if self.iteration == crash_at and self.rank == 1:
                os._exit(1)
            return real(self, batch)

        Trainer.train_step = step
    train(load_config(config, overrides), work_dir, device="cpu", progress=False)


if __name__ == "__main__":
    main()
