"""Host syncs of one training step (issue 15): every conversion of a tensor to a Python value
(``.item()``, ``bool()``, ``int()``, ``float()``, ``.tolist()``) counted with a spy on the CPU,
and on a GPU a step under ``torch.cuda.set_sync_debug_mode("error")``."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
import torch

from mtvision.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
CONVERSIONS = ("item", "__bool__", "__int__", "__float__", "tolist")


def _project_file(filename: str) -> bool:
    # The checkout's own code, not installed packages (a .venv may live inside the checkout).
    return filename.startswith(str(ROOT)) and "site-packages" not in filename


def conversion_sites(monkeypatch, fn) -> collections.Counter:
    """Run ``fn`` and count the tensor conversions by the project's frame that made them
    (``file:function``; torch's own code is named by its caller in the project)."""
    sites: collections.Counter = collections.Counter()

    def spy(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            inner = frame = sys._getframe(1)
            while frame is not None and not _project_file(frame.f_code.co_filename):
                frame = frame.f_back
            where = ("?" if frame is None else
                     f"{Path(frame.f_code.co_filename).relative_to(ROOT)}:{frame.f_code.co_name}")
            if inner is not frame:  # in torch's own code, called from the project's
                where += f" > torch {Path(inner.f_code.co_filename).name}:{inner.f_code.co_name}"
            sites[where] += 1
            return real(self, *args, **kwargs)

        return wrapper

    for name in CONVERSIONS:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    fn()
    monkeypatch.undo()
    return sites


def test_one_step_sync_census(tiny_cfg, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg, tmp_path / "run", progress=False)
    trainer.model.train()
    batch = next(iter(trainer.train_loader))
    assert trainer.train_step(batch) is not None  # warm-up: one-time work is not per step
    sites = conversion_sites(monkeypatch, lambda: trainer.train_step(batch))
    tasks = trainer.model.task_names
    opt = trainer.optimizer
    stepped = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    # torch's AdamW reads each parameter's step counter: CPU tensors (not ``capturable``), so
    # host reads, no device sync.
    assert all(opt.state[p]["step"].device.type == "cpu" for p in stepped)
    assert dict(sites) == {
        "mtvision/engine/trainer.py:train_step > torch optimizer.py:_get_value": len(stepped),
        # the loader's presence flags, on the host: no device sync
        "mtvision/engine/trainer.py:<setcomp>": len(tasks),
        # the FCOS loss: which images are labelled, from the same host flags
        "mtvision/models/heads/detection.py:loss": 1,
        # one check that the losses are finite, before the balancer's backward
        "mtvision/engine/trainer.py:train_step": 2,  # ... and one of the gradient norm
    }, dict(sites)


@pytest.mark.cuda
@pytest.mark.parametrize("balancer", ["fixed", "pcgrad"])
def test_cuda_step_has_only_the_documented_syncs(tiny_cfg, tmp_path, monkeypatch, balancer):
    """A CUDA step under ``set_sync_debug_mode("error")``: only the two documented syncs of
    ``Trainer.train_step`` (finite losses, finite gradient norm; bool() there) are let
    through, anything else that syncs raises."""
    cfg = {**tiny_cfg, "balancer": {"name": balancer}}
    trainer = Trainer(cfg, tmp_path / "run", device="cuda", progress=False)
    trainer.model.train()
    batch = next(iter(trainer.train_loader))
    assert trainer.train_step(batch) is not None  # warm-up (cuDNN, Triton compilation)
    real_bool = torch.Tensor.__bool__

    def documented_bool(self):
        code = sys._getframe(1).f_code
        if code.co_name == "train_step" and code.co_filename.endswith(
                str(Path("mtvision", "engine", "trainer.py"))):
            torch.cuda.set_sync_debug_mode("default")
            try:
                return real_bool(self)
            finally:
                torch.cuda.set_sync_debug_mode("error")
        return real_bool(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", documented_bool)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out is not None
