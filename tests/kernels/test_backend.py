import pytest
import torch
from mtvision.kernels import resolve_backend


def test_auto_picks_torch_on_cpu():
    assert resolve_backend("auto", torch.zeros(1)) == "torch"
    assert resolve_backend("torch", torch.zeros(1)) == "torch"


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", torch.zeros(1)) == "triton"


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cuda", torch.zeros(1))
