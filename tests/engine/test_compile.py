"""``train.compile``: the compiled model trains as the eager one does. The test compiles with
the ``aot_eager`` backend (graph capture and AOT autograd, no C++ code generation, which takes
minutes on a 2-core CPU); inductor's speed is measured by ``tools/benchmark.py train-step``."""

from __future__ import annotations

import pytest
import torch

from mtvision.engine.compile import compile_backend
from mtvision.engine.trainer import Trainer
from mtvision.registry import ConfigError


def _two_steps(cfg, work, compile_option):
    torch.manual_seed(0)
    cfg = {**cfg, "train": {**cfg["train"], "compile": compile_option}}
    trainer = Trainer(cfg, work, device="cpu", progress=False)
    batches = iter(trainer.train_loader)
    losses = [trainer.train_step(next(batches)) for _ in range(2)]
    return trainer, [{t: float(s[t]) for t in trainer.model.task_names} for s in losses]


def test_a_compiled_step_gives_the_eager_steps_losses(tiny_cfg, tmp_path):
    eager, eager_losses = _two_steps(tiny_cfg, tmp_path / "eager", False)
    compiled, compiled_losses = _two_steps(tiny_cfg, tmp_path / "compiled", "aot_eager")
    assert type(compiled.model.backbone).forward is not None
    assert compiled.model.backbone._compiled_call_impl is not None  # really compiled
    for e, c in zip(eager_losses, compiled_losses, strict=True):
        assert c == pytest.approx(e, rel=1e-5, abs=1e-5)
    # Same parameters and keys: checkpoints of compiled and eager runs are interchangeable.
    a, b = eager.model.state_dict(), compiled.model.state_dict()
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_compile_options():
    assert compile_backend(False) is None
    assert compile_backend(True) == "inductor"
    assert compile_backend("aot_eager") == "aot_eager"
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        compile_backend("turbo")


@pytest.mark.cuda
def test_inductor_on_cuda_gives_the_eager_losses(tiny_cfg, tmp_path):
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "amp": "none", "compile": True}}
    trainer = Trainer(cfg, tmp_path / "c", device="cuda", progress=False)
    eager = Trainer({**cfg, "train": {**cfg["train"], "compile": False}}, tmp_path / "e",
                    device="cuda", progress=False)
    eager.model.load_state_dict(trainer.model.state_dict())
    batch = next(iter(trainer.train_loader))
    got, want = trainer.train_step(batch), eager.train_step(batch)
    for t in trainer.model.task_names:
        assert float(got[t]) == pytest.approx(float(want[t]), rel=1e-4, abs=1e-4)
