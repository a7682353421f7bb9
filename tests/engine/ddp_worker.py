"""A training worker for the torchrun tests: several runs in one launch, with injected faults.

    torchrun [--max-restarts=N] tests/engine/ddp_worker.py CONFIG WORK_DIR PLAN

PLAN is a JSON list of runs, trained one after the other in ``WORK_DIR/NAME`` (importing
torch and mtvision is most of a launch's time, hence one launch for several runs)::

    {"name": NAME, "overrides": [key=value, ...], "crash_at": I, "attempt": K,
     "perturb_at": J, "expect_error": false}

- ``crash_at``: in attempt ``attempt`` (``TORCHELASTIC_RESTART_COUNT``, default 0), rank 1
  dies with ``os._exit(1)`` before training iteration I, as a lost machine would; torchrun's
  elastic agent restarts every worker and the trainer resumes the run from its ``last.pt``.
  A run that finished in an earlier attempt (its ``val_metrics.json`` exists) is skipped.
- ``perturb_at``: rank 1 changes one weight before iteration J, as a rank that drifted apart
  would; with ``expect_error`` the run's ``TrainingError`` is printed and the next run goes on.
- Every run that starts fresh seeds each rank's global generators (torch, Python, NumPy)
  differently, as the default generators of different GPUs are after a resume from one rank's
  states: nothing that must agree across the ranks may draw from them.

When a run ends, every rank prints ``run NAME rank R weights DIGEST rng DIGEST``: digests of its
parameters and of its global RNG states.
"""

import hashlib
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mtvision.engine.trainer as trainer_module  # noqa: E402
from mtvision.config import load_config  # noqa: E402
from mtvision.engine import distributed as dist  # noqa: E402
from mtvision.engine.trainer import Trainer, TrainingError  # noqa: E402

FAULTS = {"crash_at": -1, "perturb_at": -1}


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def rng_digest() -> str:
    py = random.getstate()
    return digest([torch.get_rng_state(), torch.tensor(py[1], dtype=torch.int64),
                   torch.from_numpy(np.random.get_state()[1].astype(np.int64))])


def faulty_step(real):
    def step(self, batch):
        if self.rank == 1 and self.iteration == FAULTS["crash_at"]:
            os._exit(1)
        if self.rank == 1 and self.iteration == FAULTS["perturb_at"]:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] += 1e-3
        return real(self, batch)
    return step


def main() -> None:
    config, work_dir, plan = sys.argv[1:]
    Trainer.train_step = faulty_step(Trainer.train_step)
    # The plots are checked elsewhere; here they would only add matplotlib's import.
    trainer_module.plot_training_curves = trainer_module.plot_task_interference = \
        lambda *a, **k: None
    for run in json.loads(plan):
        out = Path(work_dir) / run["name"]
        if (out / "val_metrics.json").is_file():
            continue  # finished in an earlier attempt
        mine = dist.restart_count() == run.get("attempt", 0)
        FAULTS["crash_at"] = run.get("crash_at", -1) if mine else -1
        FAULTS["perturb_at"] = run.get("perturb_at", -1)
        trainer = Trainer(load_config(config, run.get("overrides", [])), out, device="cpu",
                          progress=False)
        if trainer.iteration == 0:  # a fresh start, not a resume
            seed = 1000 + trainer.rank
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        try:
            trainer.fit()
        except TrainingError as e:
            if not run.get("expect_error"):
                raise
            if trainer.main:
                print(f"run {run['name']} error: {e}", flush=True)
            continue
        print(f"run {run['name']} rank {trainer.rank} weights "
              f"{digest(trainer.model.parameters())} rng {rng_digest()}", flush=True)
    dist.cleanup()


if __name__ == "__main__":
    main()
