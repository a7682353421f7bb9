"""kernels.gram / weighted_rows / graddrop against their references and the plain formulas.

16-bit inputs are compared with the float32 formula on the same rounded values: the kernels
accumulate in float32, so only the summation order differs (tolerance relative to the largest
magnitude of the expected result).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtvision.kernels import graddrop, gram, weighted_rows
from mtvision.kernels.gram import graddrop_reference, gram_launch, gram_reference

from tests.kernels.conftest import DTYPES, GRAD_TOL, LOSS_TOL, assert_close

TS = [2, 3, 5, 16]
PS = [1, 7, 1000, 4099]


def task_grads(T: int, P: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Rows of different scales, as the gradients of different losses are."""
    g = torch.Generator().manual_seed(seed * 1009 + T * 31 + P)
    scale = torch.logspace(-1, 1, T)[:, None]
    return (torch.randn(T, P, generator=g) * scale).to(dtype)


def graddrop_loops(G: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    """GradDrop written out column by column (float64)."""
    g, u = G.double().numpy(), u.double().numpy()
    T, P = g.shape
    out = np.zeros(P)
    for j in range(P):
        purity = 0.5 * (1 + g[:, j].sum() / (np.abs(g[:, j]).sum() + 1e-12))
        for i in range(T):
            if (u[j] < purity and g[i, j] > 0) or (u[j] > purity and g[i, j] < 0):
                out[j] += g[i, j]
    return out


# ---------------------------------------------------------------- gram
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("P", PS)
def test_gram_matches_formula(dtype, T, P, poison):
    G = task_grads(T, P, dtype)
    expected = G.float() @ G.float().T
    S = gram(G, backend="triton")
    assert S.dtype == torch.float32 and S.shape == (T, T)
    assert_close(S, expected, LOSS_TOL[dtype])
    assert_close(gram(G, backend="torch"), expected, LOSS_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_p, programs", [(16, 3), (64, 5), (128, 1)])
def test_gram_split_k(dtype, block_p, programs, poison):
    # Several chunks per program, a ragged last chunk and a last program with fewer chunks.
    G = task_grads(5, 1001, dtype, seed=1)
    S = gram_launch(G, block_p=block_p, programs=programs)
    assert_close(S, gram_reference(G), LOSS_TOL[dtype])
    assert torch.equal(S, gram_launch(G, block_p=block_p, programs=programs))  # deterministic


def test_gram_row_stride_and_auto(poison):
    base = task_grads(3, 300, torch.float32)
    G = base[:, 10:210]  # rows 300 apart, unit column stride: used without a copy
    assert_close(gram(G, backend="triton"), G @ G.T, 1e-5)
    assert torch.equal(gram(G), gram_reference(G))  # CPU tensors: "auto" is the reference


# ---------------------------------------------------------------- weighted_rows
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("P", PS)
def test_weighted_rows_matches_formula(dtype, T, P, poison):
    G = task_grads(T, P, dtype)
    w = torch.randn(T, generator=torch.Generator().manual_seed(T))
    expected = (w[:, None] * G.float()).sum(0)
    r = weighted_rows(w, G, backend="triton")
    assert r.dtype == torch.float32 and r.shape == (P,)
    assert_close(r, expected, LOSS_TOL[dtype])
    assert_close(weighted_rows(w, G, backend="torch"), expected, LOSS_TOL[dtype])


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_weighted_rows_into_out(out_dtype, backend, poison):
    G = task_grads(5, 1000, torch.bfloat16)
    w = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.5])
    out = torch.empty(1000, dtype=out_dtype)  # NaN-filled by the poison fixture
    r = weighted_rows(w, G, out=out, backend=backend)
    assert r is out and out.dtype == out_dtype
    assert not out.isnan().any()
    expected = (w[:, None] * G.float()).sum(0)
    assert_close(out, expected, LOSS_TOL[torch.float32] if out_dtype == torch.float32
                 else GRAD_TOL[torch.bfloat16])


def test_weighted_rows_strided_out(poison):
    G = task_grads(3, 7, torch.float16)
    w = torch.tensor([1.0, 2.0, -3.0])
    buf = torch.zeros(14)
    r = weighted_rows(w, G, out=buf[::2], backend="triton")
    assert r.data_ptr() == buf.data_ptr()
    assert_close(buf[::2], (w[:, None] * G.float()).sum(0), 1e-5)
    assert torch.equal(buf[1::2], torch.zeros(7))  # the gaps are not written


def test_weighted_rows_checks():
    G = torch.zeros(3, 10)
    with pytest.raises(ValueError, match="one weight per row"):
        weighted_rows(torch.zeros(2), G)
    with pytest.raises(ValueError, match="1-D tensor of 10"):
        weighted_rows(torch.zeros(3), G, out=torch.zeros(2, 5))
    with pytest.raises(TypeError, match="float dtype"):
        weighted_rows(torch.zeros(3), G, out=torch.zeros(10, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[T, P\] matrix"):
        gram(torch.zeros(10))
    with pytest.raises(TypeError, match="G must be"):
        graddrop(torch.zeros(3, 10, dtype=torch.int64))


def test_empty_columns():
    G = torch.zeros(3, 0, dtype=torch.bfloat16)
    assert torch.equal(gram(G, backend="triton"), torch.zeros(3, 3))
    assert weighted_rows(torch.ones(3), G, backend="triton").shape == (0,)
    assert graddrop(G, backend="triton").shape == (0,)


# ---------------------------------------------------------------- graddrop
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("P", PS)
def test_graddrop_matches_reference(dtype, T, P, poison):
    G = task_grads(T, P, dtype)
    u = torch.rand(P, generator=torch.Generator().manual_seed(P))
    expected = graddrop_reference(G, u)
    r = graddrop(G, u, backend="triton")
    assert r.dtype == torch.float32 and r.shape == (P,)
    assert_close(r, expected, LOSS_TOL[dtype])
    assert torch.equal(graddrop(G, u, backend="torch"), expected)


@pytest.mark.parametrize("T, P", [(2, 7), (3, 5), (5, 11)])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_graddrop_hand_loops(T, P, backend):
    G = task_grads(T, P, torch.float32, seed=2)
    u = torch.rand(P, generator=torch.Generator().manual_seed(7))
    r = graddrop(G, u, backend=backend)
    np.testing.assert_allclose(r.double().numpy(), graddrop_loops(G, u), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_graddrop_hand_cases(backend):
    G = torch.tensor([
        [1.0, -2.0, 2.0, 1.0, 1.0, 0.0],
        [3.0, -1.0, 0.0, -3.0, -3.0, 0.0],
        [0.5, -4.0, 3.0, 0.0, 0.0, 0.0],
    ])
    # Columns: all positive (purity 1), all negative (purity 0), positives and a zero
    # (purity 1), mixed with purity 0.25 under u = 0.1 and u = 0.5, all zero.
    u = torch.tensor([0.99, 0.01, 0.5, 0.1, 0.5, 0.3])
    r = graddrop(G, u, backend=backend)
    expected = torch.tensor([4.5, -7.0, 5.0, 1.0, -3.0, 0.0])
    torch.testing.assert_close(r, expected, rtol=0, atol=1e-6)
    # Signs that all agree keep everything, whatever u in (0, 1).
    same = task_grads(4, 64, torch.float32, seed=3).abs() * torch.tensor([1, -1]).repeat(32)
    for seed in range(3):
        uu = torch.rand(64, generator=torch.Generator().manual_seed(seed)).clamp(1e-6, 1 - 1e-6)
        torch.testing.assert_close(graddrop(same, uu, backend=backend), same.sum(0))


def test_graddrop_draws_u_from_generator(poison):
    G = task_grads(3, 1000, torch.bfloat16)
    a = graddrop(G, generator=torch.Generator().manual_seed(5), backend="triton")
    b = graddrop(G, generator=torch.Generator().manual_seed(5), backend="torch")
    u = torch.rand(1000, generator=torch.Generator().manual_seed(5))
    assert_close(a, graddrop_reference(G, u), 1e-5)
    assert_close(b, graddrop_reference(G, u), 1e-5)
    with pytest.raises(ValueError, match="one number per column"):
        graddrop(G, u[:10])
