"""torchrun worker: every registered balancer trains 2 steps on 2 ranks; the ranks must end
with the same weights (no deadlock, no drift). Prints one line per balancer on rank 0.

    torchrun --standalone --nproc_per_node=2 tests/engine/ddp_all_balancers.py CONFIG WORK
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as tdist  # noqa: E402

from mtvision.balancing import BALANCERS  # noqa: E402
from mtvision.balancing.gradient import GradientBalancer  # noqa: E402
from mtvision.config import load_config  # noqa: E402
from mtvision.engine import distributed as dist  # noqa: E402
from mtvision.engine.trainer import Trainer  # noqa: E402


def main() -> None:
    config, work = sys.argv[1:3]
    for name in sorted(BALANCERS.names()):
        modes = ["param", "feature"] if issubclass(BALANCERS.get(name), GradientBalancer) \
            else [None]
        for mode in modes:
            balancer = f"{{name: {name}}}" if mode is None else f"{{name: {name}, mode: {mode}}}"
            cfg = load_config(config, [f"balancer={balancer}", "train.max_iters=2",
                                       "data.batch_size=2"])
            trainer = Trainer(cfg, Path(work) / f"{name}_{mode}", device="cpu", progress=False)
            trainer.fit()
            flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
            copies = [torch.empty_like(flat) for _ in range(dist.world_size())]
            tdist.all_gather(copies, flat)
            same = all(torch.equal(copies[0], c) for c in copies[1:])
            if dist.is_main():
                print(f"{name} {mode or '-'} {'same' if same else 'DIFFERENT'}", flush=True)
    dist.cleanup()


if __name__ == "__main__":
    main()
