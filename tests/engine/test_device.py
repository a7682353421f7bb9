"""Device and AMP choices (``mtvision.engine.device``): the CUDA facts are simulated with
monkeypatching on the CPU; the tests marked ``cuda`` check the same on a real GPU."""

from __future__ import annotations

import pytest
import torch

from mtvision.engine import device as device_mod
from mtvision.engine.device import amp_dtype, native_bf16, resolve_device
from mtvision.registry import ConfigError


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with two CUDA devices whose capability the test sets; records set_device."""
    state = {"capability": (8, 0), "current": 0, "set": [], "emulated_bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: state["set"].append(
        torch.device(d).index if not isinstance(d, int) else d))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: state["capability"])
    # What torch answers on a V100 / T4: bf16 "supported" through emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: state["emulated_bf16"]
                        or state["capability"][0] >= 8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return state


@pytest.mark.parametrize("capability, expected", [
    ((7, 0), torch.float16),  # V100: bf16 only emulated -> fp16 + GradScaler
    ((7, 5), torch.float16),  # T4
    ((8, 0), torch.bfloat16),  # A100
    ((9, 0), torch.bfloat16),  # H100
])
def test_amp_auto_uses_bf16_only_where_the_gpu_has_it(fake_cuda, capability, expected):
    fake_cuda["capability"] = capability
    cuda = torch.device("cuda", 0)
    assert amp_dtype("auto", cuda) == expected
    assert native_bf16(cuda) == (expected == torch.bfloat16)
    # Explicit choices are kept; the CPU never autocasts.
    assert amp_dtype("fp16", cuda) == torch.float16
    assert amp_dtype("bf16", cuda) == torch.bfloat16
    assert amp_dtype("none", cuda) is None
    assert amp_dtype("auto", torch.device("cpu")) is None


def test_trainer_scales_fp16_gradients_on_gpus_without_bf16(fake_cuda):
    # The trainer enables its GradScaler exactly when the chosen dtype is fp16.
    from mtvision.engine import trainer

    fake_cuda["capability"] = (7, 0)
    assert trainer.amp_dtype("auto", torch.device("cuda", 0)) == torch.float16


def test_the_inference_benchmark_uses_the_same_rule():
    from mtvision.benchmarks import inference

    assert inference.amp_dtype is device_mod.amp_dtype


def test_an_unknown_amp_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="amp must be one of"):
        amp_dtype("fp8", torch.device("cpu"))


def test_a_cuda_device_becomes_the_current_one(fake_cuda):
    # Kernels and cuDNN follow the current device: --device cuda:1 must make it current.
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert fake_cuda["set"] == [1]
    fake_cuda["current"] = 1
    assert resolve_device("cuda") == torch.device("cuda", 1)  # plain "cuda": the current one
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    assert fake_cuda["set"] == [1, 1, 1]


def test_plain_cuda_is_the_local_rank_under_torchrun(fake_cuda, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert fake_cuda["set"] == [1]


def test_a_missing_gpu_index_is_a_config_error(fake_cuda):
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_the_trainer_evaluator_and_predictor_resolve_their_device_here():
    # One place decides the device: each entry point goes through resolve_device.
    import inspect

    from mtvision.engine import evaluator, trainer
    from mtvision.inference import predictor

    assert "resolve_device(device)" in inspect.getsource(trainer.Trainer.__init__)
    assert "resolve_device(device)" in inspect.getsource(evaluator.evaluate_checkpoint)
    assert "resolve_device(device)" in inspect.getsource(predictor.Predictor.__init__)


@pytest.mark.cuda
def test_amp_auto_on_this_gpu_matches_its_capability():
    dev = resolve_device("cuda")
    major = torch.cuda.get_device_capability(dev)[0]
    assert amp_dtype("auto", dev) == (torch.bfloat16 if major >= 8 else torch.float16)


@pytest.mark.cuda
def test_training_on_the_last_gpu_runs_there(tiny_cfg, tmp_path):
    # With one GPU this is cuda:0 while another device could be current; with several, the
    # last one, which is never the default.
    from mtvision.engine.trainer import Trainer

    index = torch.cuda.device_count() - 1
    tiny_cfg["train"]["max_iters"] = 2
    trainer = Trainer(tiny_cfg, tmp_path / "run", device=f"cuda:{index}", progress=False)
    assert torch.cuda.current_device() == index
    trainer.fit()
    assert {p.device for p in trainer.model.parameters()} == {torch.device("cuda", index)}
