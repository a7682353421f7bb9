"""Distributed training on PyTorch's own engine: torchrun, DistributedDataParallel, NCCL / gloo.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``init_distributed`` joins the
process group it describes (NCCL on GPUs, gloo on CPUs) and every helper here is a no-op in a
single process, so the trainer and the balancers call them unconditionally.

Synchronisation of a multi-task step (see ``Trainer.train_step``):

- loss-based balancers: one backward through the DDP-wrapped model, whose hooks average the
  gradients (bucketed, overlapped with the backward);
- gradient-based balancers: per-task gradients are averaged in one collective on the flat
  ``T x P`` matrix (mode ``param``), or the Gram matrix is summed (mode ``feature``, where the
  rows are per-sample feature gradients and only ``G G^T`` is global), before the method
  combines them; the remaining gradients are averaged in one flat collective after;
- every balancer sees the task losses averaged over the ranks (``global_loss_values``), so
  loss-based statistics and weights are identical on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

# The collectives live in a leaf module the models and balancers use too; re-exported here.
from mtvision.collectives import (  # noqa: F401
    all_reduce_max_,
    all_reduce_mean_,
    all_reduce_sum_,
    is_distributed,
    world_size,
)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> bool:
    """Join the process group torchrun describes; False when running as one process."""
    if not launched_by_torchrun() or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        # torchrun's agent keeps one store across elastic restarts, and a restarted process
        # group would find the previous round's addresses under the same keys (gloo then
        # connects to a dead peer): each round gets its own key prefix.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                              world, is_master=rank_ == 0 and not agent_store)
        store = dist.PrefixStore(f"mtvision/round{restart_count()}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world)
    return True


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files, logs and progress bars."""
    return rank() == 0


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted the workers (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def average_gradients(params: Sequence[Tensor]) -> None:
    """Average the ``.grad`` of ``params`` over the ranks in one flat collective.

    A parameter without a gradient on this rank takes part with zeros (another rank may have
    one: a head whose task this rank's batch does not label), so every rank sends the same
    layout and ends with the same gradients.
    """
    if not is_distributed() or not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = _flatten_dense_tensors(grads)
    all_reduce_mean_(flat)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def global_loss_values(losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each loss with its value averaged over the ranks and its gradient this rank's own.

    ``l + (mean - l).detach()``: the balancer's weights and statistics (which read values)
    agree on every rank, while the backward still differentiates the local loss; averaging
    the local gradients then gives the gradient of the averaged loss.
    """
    if not is_distributed() or not losses:
        return losses
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    all_reduce_mean_(values)
    return {t: v + (values[i].to(v.dtype) - v).detach()
            for i, (t, v) in enumerate(losses.items())}


def global_presence(tasks: Sequence[str], local: set[str], device: torch.device) -> list[str]:
    """The tasks that any rank's batch labels, in ``tasks`` order (one tiny collective)."""
    if not is_distributed():
        return [t for t in tasks if t in local]
    flags = torch.tensor([t in local for t in tasks], dtype=torch.int32, device=device)
    all_reduce_max_(flags)
    return [t for t, f in zip(tasks, flags.tolist(), strict=True) if f]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# Integer views of a float tensor's bit patterns, by element size.
_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def replica_divergence(named_params: Iterable[tuple[str, Tensor]]) -> str | None:
    """Whether the ranks still hold the same parameters: None when they do (always in one
    process), else which ranks differ from rank 0 and the first parameter that does.

    Each rank sums the bit patterns of every parameter tensor as integers (exact: a change of
    any one element changes its sum) on its device, without a host sync; one all-gather of
    these int64 sums, one per parameter tensor, and one read-back compare them.
    """
    if not is_distributed():
        return None
    names, sums = [], []
    for name, p in named_params:
        t = p.detach()
        sums.append(t.view(_BITS[t.element_size()]).sum(dtype=torch.int64))
        names.append(name)
    if not sums:
        return None
    local = torch.stack(sums)
    table = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(table, local)
    table = torch.stack(table).cpu()
    differ = table != table[0]  # [W, n]: where a rank's sum is not rank 0's
    ranks = [r for r in range(len(table)) if bool(differ[r].any())]
    if not ranks:
        return None
    first = names[int(differ.any(0).nonzero()[0])]
    return (f"the weights of rank{'s' if len(ranks) > 1 else ''} "
            f"{', '.join(map(str, ranks))} differ from rank 0's (first in '{first}')")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
