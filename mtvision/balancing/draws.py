"""The random numbers of the balancers (PCGrad's and GradVac's orders, GradDrop's masks, RLW's
weights): a function of (seed, iteration), never of torch's global generators.

Under torchrun every rank computes the update of the shared parameters itself (mode
``param``), so every rank must draw the same numbers. The global generators cannot promise
that: each device has its own, a resume restores them from one rank's checkpoint, and any
other code may draw from them. ``StepDraws`` keeps one ``torch.Generator`` per device, which
the trainer reseeds at every step from ``(train.seed, iteration)``; its state is part of the
balancer's ``state_dict`` (``_extra_state``), so a balancer used without the trainer resumes
its sequence too.
"""

from __future__ import annotations

from typing import Any

import torch

_MASK64 = (1 << 64) - 1


def step_seed(seed: int, iteration: int) -> int:
    """A 63-bit seed for step ``iteration`` of a run seeded with ``seed`` (SplitMix64's
    finaliser over both). Mixed, not concatenated: the CPU generator (MT19937) keeps only the
    low 32 bits of its seed, and ``seed * K + iteration`` would repeat across seeds."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(iteration) + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1


class StepDraws:
    """One generator per device, all seeded from ``(seed, iteration)``.

    ``generator(device)`` is the one to draw from on ``device``; ``reseed`` starts the draws
    of a new step. ``state`` / ``load_state`` hold plain data and CPU byte tensors
    (``weights_only``-safe); states are kept per device type, so a checkpoint written on
    ``cuda:0`` resumes on ``cuda:1`` (a CUDA generator's state is its seed and offset).
    """

    def __init__(self, seed: int = 0, iteration: int = 0) -> None:
        self.seed, self.iteration = int(seed), int(iteration)
        self._gens: dict[torch.device, torch.Generator] = {}
        self._pending: dict[str, torch.Tensor] = {}  # loaded states of devices not yet used

    def reseed(self, seed: int, iteration: int) -> None:
        """Start step ``iteration`` of a run seeded with ``seed``: the draws that follow are a
        function of these two numbers alone."""
        self.seed, self.iteration = int(seed), int(iteration)
        self._pending.clear()
        for g in self._gens.values():
            g.manual_seed(step_seed(self.seed, self.iteration))

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator of ``device`` (created on first use, in the current step's state)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        g = self._gens.get(device)
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(step_seed(self.seed, self.iteration))
            if device.type in self._pending:
                g.set_state(self._pending.pop(device.type))
            self._gens[device] = g
        return g

    def state(self) -> dict[str, Any]:
        states = dict(self._pending)
        for device, g in self._gens.items():
            states[device.type] = g.get_state()
        return {"seed": self.seed, "iteration": self.iteration, "generators": states}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seed, self.iteration = int(state["seed"]), int(state["iteration"])
        # RNG states must be CPU byte tensors, wherever the checkpoint was mapped to.
        pending = {k: v.cpu() for k, v in state["generators"].items()}
        for device, g in self._gens.items():
            if device.type in pending:
                g.set_state(pending[device.type])
        used = {device.type for device in self._gens}
        self._pending = {k: v for k, v in pending.items() if k not in used}
