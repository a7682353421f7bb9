"""The kernels on a GPU, compiled (marked ``cuda``: skipped without one; run with
``pytest -m cuda``). Every family against its reference in float32, float16 and bfloat16 at
realistic shapes, including shapes whose pixel blocks exceed grid axis 1's 65,535 (issue 14,
defect 6), the scaled float16 gradients (defect 4), launches on the tensors' device (defect 2)
and the fallback of a CUDA tensor without Triton (defect 1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from mtvision.kernels.balanced_bce import edge_bce_reference
from mtvision.kernels.gram import graddrop_reference

from mtvision import kernels
from tests.conftest import ROOT
from tests.kernels.conftest import DTYPES, GRAD_TOL, assert_close, run
from tests.kernels.launches import LAUNCHED, family_calls, spy_kernels
from tests.kernels.test_fp16_gradients import cases, check_case

pytestmark = pytest.mark.cuda

# Sums over millions of float32 terms in another order than the reference's.
LOSS_TOL = 1e-4


@pytest.fixture(autouse=True)
def _compiled():
    if kernels.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 would interpret the kernels: unset it for the GPU tests")
    yield
    torch.cuda.empty_cache()


def randn(shape, dtype, seed, scale=3.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, generator=g, device="cuda") * scale).to(dtype)


def labels(high, shape, seed, ignore=0.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    t = torch.randint(0, high, shape, generator=g, device="cuda")
    if ignore:
        t[torch.rand(shape, generator=g, device="cuda") < ignore] = 255
    return t


def torch_ce(x, t, reduction="mean"):
    return F.cross_entropy(x.float(), t, ignore_index=255, reduction=reduction)


def torch_edge(x, t, reduction="mean"):
    return edge_bce_reference(x, t, reduction=reduction)


def loss_weight(shape, dtype, seed=99, mean=True):
    """Random weights of the loss elements (the incoming gradient), for a ``mean`` over
    millions of elements times GradScaler's initial 2^16 in float16: its gradients are below
    float16's normal range otherwise, where the two sides' roundings of nearly equal float32
    values differ by whole subnormal steps. AMP training scales the same way."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(shape, generator=g, device="cuda")
    return w * 2.0**16 if dtype == torch.float16 and mean else w


def check_backend_was(expected: str = "triton") -> None:
    assert kernels.last_backend() == expected


# ---------------------------------------------------------------- loss families
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [
    (8, 21, 512, 512),   # VOC classes, one tile of classes
    (2, 150, 256, 256),  # ADE20K classes, the looped path
    (1, 21, 2900, 2900),  # 65,704 pixel blocks per image: over grid axis 1's 65,535
])
def test_cross_entropy(shape, dtype):
    x, t = randn(shape, dtype, 0), labels(shape[1], (shape[0], *shape[2:]), 1, ignore=0.2)
    loss, grad, gw = run(kernels.seg_cross_entropy, x, t, gw=loss_weight((), dtype))
    check_backend_was("triton")
    ref_loss, ref_grad, _ = run(torch_ce, x, t, gw=gw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close(loss, ref_loss, LOSS_TOL)
    assert_close(grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_per_pixel(dtype):
    shape = (4, 19, 512, 512)  # Cityscapes classes
    x, t = randn(shape, dtype, 2), labels(19, (4, 512, 512), 3, ignore=0.1)
    loss, grad, gw = run(kernels.seg_cross_entropy, x, t, reduction="none")
    ref_loss, ref_grad, _ = run(torch_ce, x, t, gw=gw, reduction="none")
    assert_close(loss, ref_loss, 1e-5)
    assert_close(grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [
    (8, 1, 512, 512),
    (1, 1, 8192, 8192),  # 65,536 blocks of 1,024 pixels: over grid axis 1's 65,535
])
def test_edge_bce(shape, dtype):
    x, t = randn(shape, dtype, 4), labels(2, (shape[0], *shape[2:]), 5, ignore=0.05)
    loss, grad, gw = run(kernels.edge_bce, x, t, gw=loss_weight((), dtype))
    check_backend_was("triton")
    ref_loss, ref_grad, _ = run(torch_edge, x, t, gw=gw)
    assert_close(loss, ref_loss, LOSS_TOL)
    assert_close(grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_bce_maps(dtype):
    x, t = randn((8, 5, 512, 512), dtype, 6), labels(2, (8, 512, 512), 7, ignore=0.05)

    def ref(x, t):
        return torch.stack([edge_bce_reference(x[:, k], t) for k in range(x.shape[1])])

    loss, grad, gw = run(kernels.edge_bce_maps, x, t, gw=loss_weight((5,), dtype))
    ref_loss, ref_grad, _ = run(ref, x, t, gw=gw)
    assert_close(loss, ref_loss, LOSS_TOL)
    assert_close(grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_focal(dtype, reduction):
    # RetinaNet on 8 images of 640 x 640: 76,725 anchors x 80 classes each.
    x = randn((8 * 76725, 80), dtype, 8, scale=2.0) - 4
    g = torch.Generator(device="cuda").manual_seed(9)
    t = (torch.rand(x.shape, generator=g, device="cuda") < 0.002).float()
    kw = dict(alpha=0.25, gamma=2.0, reduction=reduction)
    gw = loss_weight((), dtype, mean=reduction == "mean")
    loss, grad, gw = run(kernels.sigmoid_focal_loss, x, t, gw=gw, **kw)
    check_backend_was("triton")

    def ref(x, t, **kw):
        return torchvision.ops.sigmoid_focal_loss(x.float(), t, **kw)

    ref_loss, ref_grad, _ = run(ref, x, t, gw=gw, **kw)
    assert_close(loss, ref_loss, LOSS_TOL)
    assert_close(grad, ref_grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_losses(dtype):
    N, C, K, H, W = 4, 21, 5, 512, 512
    seg, edge = randn((N, C, H, W), dtype, 10), randn((N, K, H, W), dtype, 11)
    seg_t, edge_t = labels(C, (N, H, W), 12, ignore=0.1), labels(2, (N, H, W), 13, ignore=0.05)
    gs, ge = loss_weight((), dtype, seed=14), loss_weight((K,), dtype, seed=15)
    results = {}
    for backend in ("auto", "torch"):
        s, e = seg.clone().requires_grad_(), edge.clone().requires_grad_()
        seg_loss, edge_loss = kernels.dense_losses(s, seg_t, e, edge_t, backend=backend)
        if backend == "auto":
            check_backend_was("triton")
        (seg_loss * gs + (edge_loss * ge).sum()).backward()
        results[backend] = (seg_loss.detach(), edge_loss.detach(), s.grad, e.grad)
    fused, ref = results["auto"], results["torch"]
    assert_close(fused[0], ref[0], LOSS_TOL)
    assert_close(fused[1], ref[1], LOSS_TOL)
    assert fused[2].dtype == dtype and fused[3].dtype == dtype
    assert_close(fused[2], ref[2], GRAD_TOL[dtype])
    assert_close(fused[3], ref[3], GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_combine(dtype):
    T = 12
    losses = randn((T,), torch.float32, 15).abs().to(dtype)
    weights = randn((T,), torch.float32, 16).abs()
    log_vars = randn((T,), torch.float32, 17, scale=0.5)
    out = {}
    for backend in ("auto", "torch"):
        L, s = losses.clone().requires_grad_(), log_vars.clone().requires_grad_()
        total = kernels.combine_losses(L, weights, s, backend=backend)
        total.backward()
        out[backend] = (total.detach(), L.grad, s.grad)
    for a, b, tol in zip(out["auto"], out["torch"], (1e-6, GRAD_TOL[dtype], 1e-6), strict=True):
        assert_close(a, b, tol)


# ---------------------------------------------------------------- task-gradient matrix
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_family(dtype):
    T, P = 8, 20_000_000  # a ResNet-50-sized shared trunk
    G = randn((T, P), dtype, 18, scale=1.0) * torch.logspace(-1, 1, T, device="cuda")[:, None]
    G = G.to(dtype)
    Gf = G.float()
    assert_close(kernels.gram(G), Gf @ Gf.T, LOSS_TOL)
    check_backend_was("triton")
    w = torch.linspace(0.5, 1.5, T, device="cuda")
    assert_close(kernels.weighted_rows(w, G), w @ Gf, 1e-5)
    u = torch.rand(P, device="cuda", generator=torch.Generator(device="cuda").manual_seed(19))
    # Both sum the T values of a column in float32, in different orders: where u_j lies within
    # rounding of purity_j either side is right. Elsewhere the kept components must agree.
    Gd = G.double()
    purity = 0.5 * (1.0 + Gd.sum(0) / (Gd.abs().sum(0) + 1e-12))
    clear = (u.double() - purity).abs() > 1e-6
    assert clear.float().mean() > 0.999
    assert_close(kernels.graddrop(G, u)[clear], graddrop_reference(G, u)[clear], 1e-5)


# ---------------------------------------------------------------- defect 4: fp16 gradients
@pytest.mark.parametrize("name", list(cases("auto")))
def test_scaled_fp16_gradients_on_gpu(name):
    check_case(name, "cuda", "auto")
    check_backend_was("triton")


# ---------------------------------------------------------------- defect 2: devices
def test_every_launch_enters_the_tensors_device(monkeypatch):
    entered, launched = [], []
    real = torch.cuda.device

    def recording(dev):
        entered.append(torch.cuda._utils._get_device_index(dev, optional=True))
        return real(dev)

    monkeypatch.setattr(torch.cuda, "device", recording)
    spy_kernels(monkeypatch, lambda name: launched.append((name, torch.cuda.current_device())))
    for call in family_calls("cuda:0", backend="auto").values():
        call()
        check_backend_was("triton")
    assert {name for name, _ in launched} == {name for _, name in LAUNCHED}
    assert all(index == 0 for _, index in launched)
    assert len(entered) >= len(launched)
    assert all(index == 0 for index in entered), entered


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_the_second_gpu_while_the_first_is_current(monkeypatch):
    launched = []
    spy_kernels(monkeypatch, lambda name: launched.append((name, torch.cuda.current_device())))
    with torch.cuda.device(0):
        fused = {k: call() for k, call in family_calls("cuda:1", backend="auto").items()}
        assert torch.cuda.current_device() == 0  # left as it was
    ref = {k: call() for k, call in family_calls("cuda:1", backend="torch").items()}
    assert launched and all(index == 1 for _, index in launched), launched
    for family in fused:
        for a, b in zip(fused[family], ref[family], strict=True):
            assert a.device == torch.device("cuda", 1)
            assert_close(a.detach(), b.detach(), 1e-5)


# ---------------------------------------------------------------- defect 1: no Triton
NO_TRITON = r"""
import sys
sys.modules["triton"] = None
import torch, torch.nn.functional as F
from mtvision import kernels
x = torch.randn(2, 5, 8, 8, device="cuda")
t = torch.randint(0, 5, (2, 8, 8), device="cuda")
for _ in range(3):
    loss = kernels.seg_cross_entropy(x, t)
assert kernels.last_backend() == "torch"
torch.testing.assert_close(loss, F.cross_entropy(x, t))
print("FALLBACK-OK")
"""


def test_cuda_tensor_without_triton_falls_back_with_one_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", NO_TRITON], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "FALLBACK-OK" in proc.stdout, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "Triton" in ln]
    assert len(lines) == 1 and "not importable" in lines[0], proc.stderr
