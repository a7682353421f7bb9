"""The interface between the trainer and the ways of combining task losses.

The trainer computes the per-task losses and hands them to ``Balancer.backward``, which fills
the ``.grad`` of the parameters. A loss-based method only sets weights; a gradient-based
method (declared by ``requires``) may differentiate each task loss separately with respect to
the shared parameters (``"param"``) or the shared features (``"feature"``) and write the
combined gradient itself: the trainer passes both, so either mode plugs in here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtvision.balancing.draws import StepDraws
from mtvision.kernels import combine_losses


class DrawsRandomNumbers:
    """Mixin (listed before the ``Balancer`` base) of the methods that draw from
    ``self.draws``: the generator's state becomes part of their ``state_dict``
    (``_extra_state``)."""

    draws: StepDraws

    def get_extra_state(self) -> dict[str, Any]:
        return self.draws.state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.draws.load_state(state)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        # Checkpoints written before the balancers had their own generator: strict loading
        # would refuse them; the next ``reseed`` sets the generator anyway.
        if prefix + "_extra_state" in missing_keys:
            missing_keys.remove(prefix + "_extra_state")


class Balancer(nn.Module, ABC):
    """Combines task losses into parameter gradients. Subclasses implement ``weights``."""

    requires: ClassVar[str] = "losses"  # "losses" | "param" | "feature"

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        # A method that draws random numbers draws them from here (see balancing.draws).
        self.draws = StepDraws()

    def reseed(self, seed: int, iteration: int) -> None:
        """Make the random draws of step ``iteration`` a function of ``(seed, iteration)``:
        the same on every rank and in a resumed run (the trainer calls it at every step)."""
        self.draws.reseed(seed, iteration)

    def check_tasks(self, losses: dict[str, Tensor]) -> None:
        """A KeyError for losses of tasks the balancer was not built for."""
        unknown = [t for t in losses if t not in self.tasks]
        if unknown:
            raise KeyError(f"losses for unknown task(s) {', '.join(unknown)}; the balancer "
                           f"was built for {', '.join(self.tasks)}")

    def stack_losses(self, losses: dict[str, Tensor], fill: float,
                     device: torch.device) -> tuple[Tensor, Tensor]:
        """float32[T] detached losses in ``self.tasks`` order (``fill`` for a task this batch
        does not label) and bool[T] presence, built on ``device`` without a host sync."""
        self.check_tasks(losses)
        filler = torch.full((), fill, device=device)
        L = torch.stack([losses[t].detach().float().reshape(()).to(device) if t in losses
                         else filler for t in self.tasks])
        yes = torch.ones((), dtype=torch.bool, device=device)
        present = torch.stack([yes if t in losses else ~yes for t in self.tasks])
        return L, present

    @abstractmethod
    def weights(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """The weight of each task loss for this step."""

    def backward(
        self,
        losses: dict[str, Tensor],
        shared_params: Sequence[Tensor] = (),
        features: dict[str, Tensor] | None = None,
        scale: Callable[[Tensor], Tensor] = lambda t: t,
        micro: tuple[int, int] = (0, 1),
    ) -> dict[str, Tensor]:
        """Back-propagate the weighted sum of ``losses``; return the weights used (0-dim
        tensors: reading them is a device sync, left to whoever logs them).

        ``scale`` is the AMP loss scaler's ``scale`` (identity without AMP). ``micro`` (i, k)
        says which of k accumulated micro-batches this is: the total is divided by k, and each
        micro-batch is weighted on its own loss values.
        """
        w = self.weights(losses)
        tasks = list(losses)
        stacked = torch.stack([losses[t].float().reshape(()) for t in tasks])
        weights = torch.stack([torch.as_tensor(w[t], dtype=torch.float32, device=stacked.device)
                               .reshape(()) for t in tasks])
        # One fused launch on the GPU instead of a multiply and an add per task.
        total = combine_losses(stacked, weights)
        scale(total / micro[1] if micro[1] > 1 else total).backward()
        return {t: weights[i] for i, t in enumerate(tasks)}
