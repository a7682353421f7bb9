"""The gradient methods' solvers after issue 15: at most 100 aten ops per ``aggregate`` call
(each is a kernel launch on a GPU) and the results of the solvers they replaced (kept verbatim
in ``tests/balancing/reference``) on random Gram matrices."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import mtvision.balancing.aligned_mtl as aligned_mtl
import mtvision.balancing.cagrad as cagrad
import mtvision.balancing.gradnorm as gradnorm
import mtvision.balancing.gradvac as gradvac
import mtvision.balancing.imtl as imtl
import mtvision.balancing.mgda as mgda
import mtvision.balancing.nash_mtl as nash_mtl
import mtvision.balancing.pcgrad as pcgrad
import mtvision.balancing.upgrad as upgrad
from mtvision.balancing import aggregate
from mtvision.balancing.functional import AGGREGATORS
from tests.balancing import reference as ref  # noqa: F401 - the package
from tests.balancing.reference import aligned_mtl as ref_aligned
from tests.balancing.reference import cagrad as ref_cagrad
from tests.balancing.reference import gradnorm as ref_gradnorm
from tests.balancing.reference import gradvac as ref_gradvac
from tests.balancing.reference import imtl as ref_imtl
from tests.balancing.reference import mgda as ref_mgda
from tests.balancing.reference import nash_mtl as ref_nash
from tests.balancing.reference import pcgrad as ref_pcgrad
from tests.balancing.reference import upgrad as ref_upgrad

MAX_OPS = 100
T = 4


def aten_ops(fn) -> int:
    """aten ops (nested ones included) of one call of ``fn``, after a warm-up call."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


@pytest.mark.parametrize("name", sorted(n for n in AGGREGATORS if n not in ("mean", "sum")))
def test_every_method_costs_at_most_100_ops(name):
    G = torch.randn(T, 2000, generator=torch.Generator().manual_seed(0))
    ops = aten_ops(lambda: aggregate(name, G))
    assert ops <= MAX_OPS, f"{name}: {ops} aten ops per aggregate call (T={T})"


def test_the_op_count_sees_a_regression():
    # The same count on the replaced MGDA solver: thousands of ops.
    M = torch.randn(T, 50, dtype=torch.float64)
    assert aten_ops(lambda: ref_mgda.mgda_weights(M @ M.T)) > 10 * MAX_OPS


def grams(P: int, n: int = 4, shared: float = 0.3, scaled: bool = True):
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        G = torch.randn(T, P, generator=g, dtype=torch.float64)
        G = G + shared * torch.randn(1, P, generator=g, dtype=torch.float64)
        if scaled and seed % 2:  # norms 0.1 to 10
            G = G * torch.logspace(-1, 1, T, dtype=torch.float64)[:, None]
        yield G @ G.T


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


# (new, reference) weight functions of the Gram matrix; the random order is off for PCGrad
# and GradVac (their draws are the RNG's business, the arithmetic is compared here).
PAIRS = {
    "cagrad": (cagrad.cagrad_weights, ref_cagrad.cagrad_weights),
    "upgrad": (upgrad.upgrad_weights, ref_upgrad.upgrad_weights),
    "nash_mtl": (nash_mtl.nash_mtl_weights, ref_nash.nash_mtl_weights),
    "imtl_g": (imtl.imtl_g_weights, ref_imtl.imtl_g_weights),
    "aligned_mtl": (aligned_mtl.aligned_mtl_weights, ref_aligned.aligned_mtl_weights),
    "pcgrad": (lambda M: pcgrad.pcgrad_weights(M, random_order=False),
               lambda M: ref_pcgrad.pcgrad_weights(M, random_order=False)),
    "gradvac": (lambda M: gradvac.gradvac_weights(M, 0.3, random_order=False),
                lambda M: ref_gradvac.gradvac_weights(M, 0.3, random_order=False)),
    "gradnorm": (lambda M: gradnorm.gradnorm_weights(M, torch.tensor([1.0, 0.5, 2.0, 0.8]),
                                                     torch.tensor([2.0, 1.0, 1.0, 1.0])),
                 lambda M: ref_gradnorm.gradnorm_weights(M, torch.tensor([1.0, 0.5, 2.0, 0.8]),
                                                         torch.tensor([2.0, 1.0, 1.0, 1.0]))),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("P", [6, 1000])
def test_same_weights_as_the_replaced_solver(name, P):
    new, old = PAIRS[name]
    for M in grams(P):
        close(new(M), old(M))
        close(new(M.float()), old(M.float()), 1e-4)  # the kernel's float32 Gram matrix


def test_gradvac_observed_cosines_match_the_replaced_solver():
    for M in grams(20):
        tgt = torch.full((T, T), 0.2)
        for a, b in zip(gradvac.gradvac_step(M, tgt, random_order=False),
                        ref_gradvac.gradvac_step(M, tgt, random_order=False), strict=True):
            close(a, b)


def mgda_divisors(M, L, normalization):
    norms = M.diagonal().sqrt()
    return {"none": torch.ones_like(norms), "l2": norms,
            "loss+": L.double() * norms}[normalization]


@pytest.mark.parametrize("normalization", ["none", "l2", "loss+"])
def test_mgda_same_weights_where_frank_wolfe_converged(normalization):
    """Frank-Wolfe (250 steps) is exact to 1e-5 for well-conditioned problems (many more
    parameters than tasks); the exact solver agrees there and is never worse elsewhere."""
    L = torch.tensor([0.5, 2.0, 1.0, 3.0])
    if normalization != "loss+":  # loss+ rescales the problem: Frank-Wolfe slows down
        for M in grams(1000, n=3, shared=0.0, scaled=False):  # Frank-Wolfe converges here
            close(mgda.mgda_weights(M, L, normalization),
                  ref_mgda.mgda_weights(M, L, normalization))
    for P in (3, 6, 50):
        for M in grams(P, n=3):
            new = mgda.mgda_weights(M, L, normalization).double()
            old = ref_mgda.mgda_weights(M, L, normalization).double()
            assert new.min() >= 0 and abs(float(new.sum()) - 1) < 1e-6
            # Both minimise w^T N w on the simplex, N the normalised Gram matrix.
            N = M / (mgda_divisors(M, L, normalization)[:, None]
                     * mgda_divisors(M, L, normalization)[None, :])
            scale = float(N.diagonal().max())
            assert float(new @ N @ new) <= float(old @ N @ old) + 1e-9 * scale
