"""The gradient-combining methods (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, UPGrad,
GradVac, DB-MTL, GradNorm): known answers and properties of their pure weight functions on the
Gram matrix, and their balancer classes (build, state, subsets of tasks)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import mtvision.balancing.aligned_mtl as aligned_mtl
import mtvision.balancing.cagrad as cagrad
import mtvision.balancing.db_mtl as db_mtl
import mtvision.balancing.gradnorm as gradnorm
import mtvision.balancing.gradvac as gradvac
import mtvision.balancing.imtl as imtl
import mtvision.balancing.mgda as mgda
import mtvision.balancing.nash_mtl as nash_mtl
import mtvision.balancing.pcgrad as pcgrad
import mtvision.balancing.upgrad as upgrad
from mtvision.balancing import aggregate, build_balancer
from mtvision.registry import ConfigError

DTYPES = [torch.float32, torch.float64]
TASKS = ["a", "b", "c"]
# name -> the pure function of the Gram matrix (every option defaulted)
PURE = {
    "mgda": mgda.mgda_weights,
    "pcgrad": pcgrad.pcgrad_weights,
    "cagrad": cagrad.cagrad_weights,
    "imtl_g": imtl.imtl_g_weights,
    "nash_mtl": nash_mtl.nash_mtl_weights,
    "aligned_mtl": aligned_mtl.aligned_mtl_weights,
    "upgrad": upgrad.upgrad_weights,
    "gradvac": gradvac.gradvac_weights,
    "db_mtl": db_mtl.db_mtl_weights,
    "gradnorm": gradnorm.gradnorm_weights,
}
CLASSES = list(PURE) + ["mgda_ub"]


def rand_G(T: int, P: int, dtype=torch.float64, seed: int = 0, shared: float = 0.3):
    """Random task gradients with a common component (some agreement, some conflict)."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(T, P, generator=g, dtype=torch.float64)
    G = G + shared * torch.randn(1, P, generator=g, dtype=torch.float64)
    return G.to(dtype)


def gram(G):
    return G @ G.T


def direction(w, G):
    """``w^T G`` in float64."""
    return w.double() @ G.double()


def scale_of(G):
    return float((G.double() ** 2).sum(1).max())


# -- MGDA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_mgda_two_tasks_closed_form(dtype, seed):
    G = rand_G(2, 6, dtype, seed, shared=0.5 * seed)
    g1, g2 = G.double()
    gamma = ((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))).clamp(0, 1)
    w = mgda.mgda_weights(gram(G))
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.double(), torch.stack([gamma, 1 - gamma]), rtol=1e-5,
                               atol=1e-6)


def test_mgda_two_tasks_clipped():
    # g2 = 2 g1: the min-norm point is g1 (gamma clipped to 1).
    G = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    torch.testing.assert_close(mgda.mgda_weights(gram(G)), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "P"), [(3, 4), (3, 50), (5, 8), (7, 100), (6, 4)])
def test_mgda_min_norm_point_conflicts_with_no_task(dtype, T, P):
    for seed in range(3):
        G = rand_G(T, P, dtype, seed)
        w = mgda.mgda_weights(gram(G))
        assert torch.all(w >= 0) and abs(float(w.sum()) - 1) < 1e-5
        d = direction(w, G)
        s = scale_of(G)
        # Frank-Wolfe is approximate when the origin is (nearly) in the hull (T > P).
        tol = (1e-6 if T <= P else 1e-2) * s
        assert float((G.double() @ d).min()) >= -tol
        # The min-norm point is no longer than any task gradient.
        assert float(d @ d) <= float((G.double() ** 2).sum(1).min()) + 1e-6 * s


def test_mgda_normalizations():
    G = rand_G(3, 10) * torch.tensor([[1.0], [10.0], [0.1]], dtype=torch.float64)
    M = gram(G)
    norms = M.diagonal().sqrt()
    L = torch.tensor([0.5, 2.0, 4.0])
    for name, n in [("l2", norms), ("loss", L.double()), ("loss+", L.double() * norms)]:
        expected = mgda.mgda_weights(M / (n[:, None] * n[None, :]))
        torch.testing.assert_close(mgda.mgda_weights(M, L, normalization=name), expected)
    with pytest.raises(ValueError, match="losses"):
        mgda.mgda_weights(M, normalization="loss")
    with pytest.raises(ValueError, match="normalization"):
        mgda.mgda_weights(M, normalization="L2")


# -- PCGrad -------------------------------------------------------------------------------------

def pcgrad_reference(G, order):
    """Algorithm 1 on the vectors, with the given visiting order [T, T-1]."""
    G = G.double()
    out = []
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in order[i].tolist():
            dot = g @ G[j]
            if dot < 0:
                g = g - dot / (G[j] @ G[j]) * G[j]
        out.append(g)
    return torch.stack(out).sum(0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pcgrad_conflicting_pair(dtype):
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=dtype)
    # g1 - (-1/2) g2 = (0.5, 0.5); g2 - (-1/1) g1 = (0, 1)
    torch.testing.assert_close(direction(pcgrad.pcgrad_weights(gram(G)), G),
                               torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_pcgrad_agreeing_pair_is_the_sum():
    G = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, -0.5]])
    torch.testing.assert_close(pcgrad.pcgrad_weights(gram(G)), torch.ones(2))


@pytest.mark.parametrize("random_order", [False, True])
def test_pcgrad_matches_the_vector_algorithm(random_order):
    G = rand_G(5, 7, seed=2, shared=0.0)
    order = pcgrad.conflict_order(5, G.device, torch.Generator().manual_seed(1), random_order)
    assert sorted(order[0].tolist()) == [1, 2, 3, 4]
    assert all(i not in order[i].tolist() for i in range(5))
    w = pcgrad.pcgrad_weights(gram(G), torch.Generator().manual_seed(1), random_order)
    torch.testing.assert_close(direction(w, G), pcgrad_reference(G, order), rtol=1e-5,
                               atol=1e-5)


# -- CAGrad -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_cagrad_without_radius_is_the_mean(rescale):
    G = rand_G(4, 9)
    torch.testing.assert_close(cagrad.cagrad_weights(gram(G), c=0.0, rescale=rescale),
                               torch.full((4,), 0.25))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "P"), [(2, 5), (3, 10), (5, 40)])
def test_cagrad_solves_its_dual(dtype, T, P):
    G = rand_G(T, P, dtype, seed=T)
    M = gram(G).double()
    c = 0.4
    w = cagrad.cagrad_weights(gram(G), c=c, rescale=0)
    d = direction(w, G)
    g0 = G.double().mean(0)
    # d lies on the sphere of radius c ||g0|| around g0 ...
    assert math.isclose(float((d - g0).norm()), c * float(g0.norm()), rel_tol=1e-4)
    # ... and the dual objective at its x is no worse than at random points of the simplex.
    x = (w.double() - 1.0 / T)
    x = x / x.sum()
    b = torch.full((T,), 1.0 / T, dtype=torch.float64)
    r = c * float(g0.norm())

    def dual(X):
        return X @ M @ b + r * ((X @ M) * X).sum(-1).clamp_min(0).sqrt()

    others = torch.distributions.Dirichlet(torch.ones(T, dtype=torch.float64)).sample((2000,))
    assert float(dual(x[None])[0]) <= float(dual(others).min()) + 1e-6 * scale_of(G)
    # The worst task improves at least as fast as with the mean gradient.
    assert float((G.double() @ d).min()) >= float((G.double() @ g0).min()) - 1e-6


def test_cagrad_rescale():
    G = rand_G(3, 8)
    w0 = cagrad.cagrad_weights(gram(G), c=0.5, rescale=0)
    torch.testing.assert_close(cagrad.cagrad_weights(gram(G), c=0.5, rescale=1), w0 / 1.25)
    torch.testing.assert_close(cagrad.cagrad_weights(gram(G), c=0.5, rescale=2), w0 / 1.5)


# -- IMTL-G -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "P"), [(2, 4), (3, 10), (5, 20)])
def test_imtl_g_equal_projections(dtype, T, P):
    G = rand_G(T, P, dtype, seed=T) * torch.logspace(-1, 1, T, dtype=torch.float64)[:, None]
    G = G.to(dtype)
    w = imtl.imtl_g_weights(gram(G))
    assert abs(float(w.sum()) - 1) < 1e-5
    G64 = G.double()
    U = G64 / G64.norm(dim=1, keepdim=True)
    proj = U @ direction(w, G)
    torch.testing.assert_close(proj, proj.mean().expand(T), rtol=1e-4, atol=0)
    # The paper's closed form with task T as the reference.
    D = G64[-1:] - G64[:-1]
    Ud = U[-1:] - U[:-1]
    alpha = G64[-1] @ Ud.T @ torch.linalg.inv(D @ Ud.T)
    torch.testing.assert_close(w.double(), torch.cat([alpha, 1 - alpha.sum(0, keepdim=True)]),
                               rtol=1e-4, atol=1e-5)


def test_imtl_g_parallel_gradients_do_not_raise():
    G = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    w = imtl.imtl_g_weights(gram(G))
    assert torch.isfinite(w).all()
    assert abs(float(w.sum()) - 1) < 1e-4


# -- Nash-MTL -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "P"), [(2, 5), (3, 10), (5, 10), (8, 200)])
def test_nash_mtl_solves_the_bargaining_equation(dtype, T, P):
    scales = torch.logspace(-2, 2, T, dtype=torch.float64)[:, None]
    G = (rand_G(T, P, seed=T) * scales).to(dtype)
    M = gram(G).double()
    w = nash_mtl.nash_mtl_weights(gram(G)).double()
    assert torch.all(w > 0)
    torch.testing.assert_close((M @ w) * w, torch.ones(T, dtype=torch.float64), rtol=0,
                               atol=1e-4)


def test_nash_mtl_max_norm():
    G = rand_G(3, 10)
    d = direction(nash_mtl.nash_mtl_weights(gram(G), max_norm=0.5), G)
    assert math.isclose(float(d.norm()), 0.5, rel_tol=1e-4)
    d = direction(nash_mtl.nash_mtl_weights(gram(G), max_norm=10.0), G)
    assert math.isclose(float(d.norm()), math.sqrt(3), rel_tol=1e-4)  # ||d||^2 = T


def test_nash_mtl_update_every():
    bal = build_balancer({"name": "nash_mtl", "update_every": 3}, TASKS)
    grams = [gram(rand_G(3, 10, torch.float32, seed=s)) for s in range(4)]
    ws = [bal.task_weights(M, torch.ones(3)) for M in grams]
    torch.testing.assert_close(ws[0], nash_mtl.nash_mtl_weights(grams[0]))
    torch.testing.assert_close(ws[1], ws[0])
    torch.testing.assert_close(ws[2], ws[0])
    torch.testing.assert_close(ws[3], nash_mtl.nash_mtl_weights(grams[3]))
    assert int(bal.step) == 4


# -- Aligned-MTL --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [2, 3, 5])
def test_aligned_mtl_orthogonal_equal_norms(dtype, T):
    Q, _ = torch.linalg.qr(torch.randn(12, T, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(T)))
    G = (3.0 * Q.T).to(dtype)
    torch.testing.assert_close(aligned_mtl.aligned_mtl_weights(gram(G)), torch.ones(T))
    pre = torch.arange(1.0, T + 1)
    torch.testing.assert_close(aligned_mtl.aligned_mtl_weights(gram(G), pre), pre)


def test_aligned_mtl_aligns_into_equal_orthogonal_gradients():
    G = rand_G(4, 20) * torch.tensor([[1.0], [5.0], [0.2], [2.0]], dtype=torch.float64)
    M = gram(G)
    # Column k of B from the pre-weights e_k; the aligned gradients G^T B are orthogonal with
    # the norm of the smallest singular value (scale_mode "min").
    B = torch.stack([aligned_mtl.aligned_mtl_weights(M, torch.eye(4)[k]) for k in range(4)],
                    dim=1).double()
    lam_min = float(torch.linalg.eigvalsh(M)[0])
    torch.testing.assert_close(B.T @ M @ B, lam_min * torch.eye(4, dtype=torch.float64),
                               rtol=0, atol=1e-5 * lam_min)
    lam = torch.linalg.eigvalsh(M)
    for mode, ref in [("median", lam[1]), ("rmse", lam.mean())]:
        w = aligned_mtl.aligned_mtl_weights(M, scale_mode=mode).double()
        torch.testing.assert_close(w, aligned_mtl.aligned_mtl_weights(M).double()
                                   * math.sqrt(ref / lam_min), rtol=1e-4, atol=1e-6)


# -- UPGrad -------------------------------------------------------------------------------------

def upgrad_reference(M, reg_eps=1e-4):
    """Each projection by enumerating the active sets of min v^T Q v, v >= e_i / T."""
    T = M.shape[0]
    Q = M / M.diagonal().sum() + reg_eps * torch.eye(T, dtype=M.dtype)
    out = torch.zeros(T, dtype=M.dtype)
    for i in range(T):
        low = torch.eye(T, dtype=M.dtype)[i] / T
        best, best_f = None, math.inf
        for mask in itertools.product([False, True], repeat=T):
            free = torch.tensor(mask)
            v = low.clone()
            if free.any():
                v[free] = torch.linalg.solve(Q[free][:, free], -(Q[free][:, ~free] @ low[~free]))
            if torch.all(v >= low - 1e-12) and float(v @ Q @ v) < best_f:
                best, best_f = v, float(v @ Q @ v)
        out += best
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "P"), [(2, 3), (3, 5), (4, 30), (6, 3)])
def test_upgrad_lies_in_the_dual_cone(dtype, T, P):
    for seed in range(3):
        G = rand_G(T, P, dtype, seed, shared=0.0)
        M = gram(G)
        w = upgrad.upgrad_weights(M).double()
        # Exact up to the 1e-4 ridge (relative to the trace), which rank-deficient G feel.
        tol = 1e-4 * float(M.double().diagonal().sum()) * float(w.abs().sum())
        assert float((M.double() @ w).min()) >= -tol
        if T <= 4:
            torch.testing.assert_close(w, upgrad_reference(M.double()), rtol=1e-5, atol=1e-6)


def test_upgrad_without_conflict_is_the_mean():
    Q, _ = torch.linalg.qr(torch.randn(10, 3, dtype=torch.float64))
    G = Q.T * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(upgrad.upgrad_weights(gram(G)), torch.full((3,), 1 / 3))


# -- GradVac ------------------------------------------------------------------------------------

def test_gradvac_with_zero_target_is_pcgrad():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(gradvac.gradvac_weights(gram(G), 0.0),
                               pcgrad.pcgrad_weights(gram(G)))
    G = rand_G(4, 6, seed=5, shared=0.0)
    torch.testing.assert_close(
        gradvac.gradvac_weights(gram(G), 0.0, torch.Generator().manual_seed(2)),
        pcgrad.pcgrad_weights(gram(G), torch.Generator().manual_seed(2)))


def test_gradvac_reaches_the_target_cosine():
    G = torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.5]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.8], [-1.0, 0.0]])  # only g_1 is changed (cos < 0.8)
    w = gradvac.gradvac_weights(gram(G), targets).double()
    g1 = (w - torch.tensor([0.0, 1.0], dtype=torch.float64)) @ G
    cos = g1 @ G[1] / (g1.norm() * G[1].norm())
    assert math.isclose(float(cos), 0.8, rel_tol=1e-5)


def test_gradvac_targets_follow_the_cosines():
    bal = build_balancer({"name": "gradvac", "beta": 0.5}, ["a", "b"])
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    bal.task_weights(gram(G), torch.ones(2))
    c = 1 / math.sqrt(2)
    torch.testing.assert_close(bal.targets, torch.tensor([[0.0, 0.5 * c], [0.5 * c, 0.0]]))


# -- DB-MTL -------------------------------------------------------------------------------------

def test_db_mtl_equal_losses_and_norms():
    Q, _ = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64))
    G = 2.0 * Q.T + 0.1
    G = 2.0 * G / G.norm(dim=1, keepdim=True)
    w = db_mtl.db_mtl_weights(gram(G), torch.full((3,), 0.7))
    torch.testing.assert_close(w, w[0].expand(3))
    torch.testing.assert_close(w[0], torch.tensor(1 / (0.7 + 1e-8)))


def test_db_mtl_scales_every_log_gradient_to_the_largest():
    G = rand_G(3, 10) * torch.tensor([[1.0], [4.0], [0.5]], dtype=torch.float64)
    L = torch.tensor([2.0, 0.5, 1.0])
    w = db_mtl.db_mtl_weights(gram(G), L).double()
    norms = G.norm(dim=1)
    h = norms / L.double()
    torch.testing.assert_close(w * norms, h.max().expand(3), rtol=1e-6, atol=0)
    # The class's EMA (from 0) has the same ratios on its first step.
    bal = build_balancer({"name": "db_mtl"}, TASKS)
    torch.testing.assert_close(bal.task_weights(gram(G), L), w.float())
    torch.testing.assert_close(bal.norm_ema, (0.1 * h).float())


# -- GradNorm -----------------------------------------------------------------------------------

def test_gradnorm_moves_toward_the_slower_task():
    bal = build_balancer({"name": "gradnorm", "lr": 0.1}, TASKS)
    M = torch.eye(3) * 4.0  # equal gradient norms 2
    w1 = bal.task_weights(M, torch.tensor([1.0, 1.0, 1.0]))  # records L(0); rates all 1
    torch.testing.assert_close(w1, torch.ones(3))
    torch.testing.assert_close(bal.task_w, torch.ones(3))
    w2 = bal.task_weights(M, torch.tensor([0.5, 1.0, 0.25]))  # b trains slowest
    torch.testing.assert_close(w2, torch.ones(3))  # this step uses the weights before its update
    w3 = bal.task_weights(M, torch.tensor([0.5, 1.0, 0.25]))
    assert float(w3[1]) > 1 > float(w3[2]) and float(w3[0]) < 1
    assert math.isclose(float(w3.sum()), 3.0, rel_tol=1e-6)
    torch.testing.assert_close(bal.initial_losses, torch.ones(3))
    # By hand: G_i = 2, r = (6/7, 12/7, 3/7), targets 2 r^1.5 = (1.59, 4.49, 0.56): signs
    # (+, -, +), each w_i moves by lr * 2 = 0.2, then the sum is brought back to 3.
    expected = torch.tensor([1 - 0.2, 1 + 0.2, 1 - 0.2])
    torch.testing.assert_close(w3, expected * 3 / expected.sum())


# -- properties shared by every method ----------------------------------------------------------

@pytest.mark.parametrize("name", list(PURE))
def test_results_do_not_depend_on_zero_padding(name):
    G = rand_G(3, 20, torch.float32, seed=7)
    padded = torch.cat([G, torch.zeros(3, 11)], dim=1)
    fn = PURE[name]
    torch.manual_seed(0)  # PCGrad's and GradVac's order
    a = fn(gram(padded))
    torch.manual_seed(0)
    torch.testing.assert_close(a, fn(gram(G)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(PURE))
@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_task_gradient_gives_no_nan(name, T, dtype):
    G = rand_G(T, 6, dtype, seed=1)
    G[1] = 0
    w = PURE[name](gram(G))
    assert w.shape == (T,) and w.dtype == torch.float32 and torch.isfinite(w).all()
    assert torch.isfinite(direction(w, G)).all()
    assert torch.isfinite(PURE[name](gram(torch.zeros(T, 6, dtype=dtype)))).all()


@pytest.mark.parametrize("name", ["mgda", "imtl_g", "nash_mtl", "aligned_mtl", "upgrad"])
def test_aggregate_uses_the_weights(name):
    G = rand_G(3, 40, torch.float32, seed=3)
    torch.testing.assert_close(aggregate(name, G), (PURE[name](gram(G)) @ G), rtol=1e-4,
                               atol=1e-5)


def same_state(a, b):
    """Equal state dicts, the generator state of the methods that draw (``_extra_state``, plain
    data and tensors) included."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def run_steps(bal, n=3, T=3):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(bal.task_weights(gram(rand_G(T, 12, torch.float32, seed=s)),
                                    torch.tensor([1.0, 0.5, 0.8])[:T] / (s + 1)))
    return out


@pytest.mark.parametrize("name", CLASSES)
def test_every_class_builds_and_round_trips_its_state(name):
    bal = build_balancer({"name": name}, TASKS)
    assert bal.mode == ("feature" if name == "mgda_ub" else "param")
    assert bal.requires == bal.mode
    for w in run_steps(bal):
        assert w.shape == (3,) and torch.isfinite(w).all()
    other = build_balancer({"name": name, "mode": "feature"}, TASKS)
    other.load_state_dict(bal.state_dict())
    assert same_state(bal.state_dict(), other.state_dict())
    for a, b in zip(run_steps(bal), run_steps(other), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("name", "options"), [
    ("mgda", {"normalization": "l1"}), ("mgda", {"max_iter": 0}), ("pcgrad", {"random_order": 1}),
    ("cagrad", {"c": -1}), ("cagrad", {"rescale": 3}), ("nash_mtl", {"update_every": 0}),
    ("nash_mtl", {"max_norm": 0}), ("aligned_mtl", {"scale_mode": "max"}),
    ("aligned_mtl", {"pre_weights": {"z": 1.0}}), ("upgrad", {"reg_eps": 0}),
    ("gradvac", {"beta": 0}), ("db_mtl", {"beta": 1.0}), ("gradnorm", {"lr": 0}),
    ("mgda", {"mode": "both"}), ("gradnorm", {"alhpa": 1.0}),
])
def test_bad_options(name, options):
    with pytest.raises(ConfigError):
        build_balancer({"name": name, **options}, TASKS)


@pytest.mark.parametrize("name", ["gradnorm", "db_mtl", "gradvac", "nash_mtl"])
def test_stateful_methods_with_a_subset_of_tasks(name):
    """A batch labelling only a and c: backward updates only their entries of the state."""
    bal = build_balancer({"name": name}, TASKS)
    run_steps(bal, n=1)

    def tensors():  # the buffers, without GradVac's generator state
        return {k: v for k, v in bal.state_dict().items() if k != "_extra_state"}

    before = {k: v.clone() for k, v in tensors().items()}
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    xa, xc = torch.tensor([1.0, 2.0, 0.0, -1.0]), torch.tensor([-1.0, 0.5, 1.0, 0.0])
    losses = {"a": (p * xa).sum() ** 2, "c": (p * xc).sum() ** 2}
    ga, gc = [torch.autograd.grad(v, p, retain_graph=True)[0] for v in losses.values()]
    weights = bal.backward(losses, [p])
    assert set(weights) == {"a", "c"}
    w = torch.stack([weights["a"], weights["c"]])
    torch.testing.assert_close(p.grad, w @ torch.stack([ga, gc]))
    changed = {k for k, v in tensors().items() if not torch.equal(v, before[k])}
    assert changed
    for k, v in tensors().items():
        if v.dim() >= 1 and v.shape[0] == 3:  # a per-task buffer: b's entries stay
            torch.testing.assert_close(v[1], before[k][1])
            if v.dim() == 2:
                torch.testing.assert_close(v[:, 1], before[k][:, 1])
