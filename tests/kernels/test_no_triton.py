"""The package without Triton (CPU-only, macOS and Windows installs of torch): with ``triton``
unimportable, training, ``tools/eval.py`` and ``Predictor.predict`` run on the CPU with the
PyTorch reference losses, without a warning (issue 14, defect 1). On a CUDA tensor,
``backend="auto"`` falls back to the reference with one warning line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import torch

from mtvision import kernels
from tests.conftest import ROOT, tiny_overrides

SCRIPT = r"""
import runpy, sys
sys.modules["triton"] = None  # `import triton` raises ImportError, as where it is absent

config, work = sys.argv[1], sys.argv[2]
overrides = sum((["-o", o] for o in sys.argv[3:]), [])
train = runpy.run_path("tools/train.py", run_name="train_tool")["main"]
evaluate = runpy.run_path("tools/eval.py", run_name="eval_tool")["main"]
assert train([config, "--work-dir", work, "--device", "cpu", "--no-progress", *overrides]) == 0
assert evaluate([config, work + "/last.pt", "--device", "cpu", "--no-progress",
                 *overrides]) == 0

import numpy as np
from mtvision.inference import Predictor

image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
result = Predictor(work + "/last.pt", device="cpu").predict(image)
assert result.prediction() is not None

from mtvision import kernels
assert kernels.last_backend() == "torch", kernels.last_backend()
assert sys.modules["triton"] is None  # nothing imported Triton behind the block
print("NO-TRITON-OK")
"""


def test_train_eval_predict_without_triton(tmp_path, shapes_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    over = tiny_overrides(shapes_root, iters=2)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "configs" / "demo.yaml"),
                           str(tmp_path / "run"), *over],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "NO-TRITON-OK" in proc.stdout, proc.stderr[-3000:]
    assert "Triton" not in proc.stderr  # the CPU needs no warning


def test_auto_on_cuda_without_triton_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "triton_import_error", lambda: "No module named 'triton'")
    monkeypatch.setattr(kernels, "_announced", set())
    cuda_tensor = types.SimpleNamespace(is_cuda=True)  # only is_cuda is read
    with caplog.at_level(logging.WARNING, logger="kernels"):
        assert kernels.resolve_backend("auto", cuda_tensor) == "torch"
        assert kernels.resolve_backend("auto", cuda_tensor) == "torch"
        assert kernels.resolve_backend("auto", torch.zeros(1)) == "torch"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "Triton is not importable" in lines[0], lines
    assert "\n" not in lines[0]
    assert kernels.last_backend() == "torch"


def test_triton_backend_without_triton_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels, "triton_import_error", lambda: "No module named 'triton'")
    try:
        kernels.resolve_backend("triton", torch.zeros(1))
    except RuntimeError as e:
        assert "not importable" in str(e)
    else:
        raise AssertionError("backend='triton' without Triton must raise")


def test_last_backend_names_the_backend_that_ran():
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    kernels.seg_cross_entropy(x, t, backend="triton")
    assert kernels.last_backend() == "triton"
    kernels.seg_cross_entropy(x, t)  # auto on the CPU
    assert kernels.last_backend() == "torch"
