"""The balancers' random numbers (PCGrad and GradVac orders, GradDrop masks, RLW weights) are a
function of (seed, iteration): never of torch's global generators, which differ between the
devices of a torchrun job; their generator state is part of the balancer's state dict."""

import io

import pytest
import torch

from mtvision.balancing import build_balancer
from mtvision.balancing.draws import step_seed

TASKS = ["a", "b", "c"]
RANDOM = [{"name": "pcgrad"}, {"name": "gradvac"}, {"name": "graddrop", "mode": "param"},
          {"name": "rlw"}]


def conflicting_G(device="cpu", P=64):
    """Three task gradients that conflict on many coordinates and in pairs."""
    g = torch.Generator().manual_seed(0)
    G = torch.randn(3, P, generator=g)
    G[1] = -0.8 * G[0] + 0.3 * G[1]
    return G.to(device)


def update(bal, G, device="cpu"):
    """One balanced backward of losses whose gradients are the rows of ``G``: the shared
    parameter's gradient, or the RLW weights (a loss-based method writes no update of its own
    worth comparing)."""
    p = torch.zeros(G.shape[1], device=device, requires_grad=True)
    losses = {t: (p * G[i]).sum() for i, t in enumerate(TASKS)}
    w = bal.backward(losses, [p])
    return torch.stack(list(w.values())) if bal.requires == "losses" else p.grad


def test_step_seeds_differ_in_the_low_32_bits():
    # The CPU generator (MT19937) keeps only the low 32 bits of a seed.
    seeds = {step_seed(s, i) & 0xFFFFFFFF for s in range(40) for i in range(250)}
    assert len(seeds) == 40 * 250
    assert all(0 <= step_seed(s, i) < 2**63 for s in (-3, 0, 2**40) for i in (0, 10**9))


@pytest.mark.parametrize("cfg", RANDOM, ids=lambda c: c["name"])
def test_draws_are_a_function_of_seed_and_iteration(cfg):
    G = conflicting_G()
    # Two "ranks" whose global generators differ, as two GPUs' default generators do.
    results = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        bal = build_balancer(cfg, TASKS)
        torch.rand(global_seed + 5)  # other code drawing from the global generator
        bal.reseed(7, 12)
        results.append(update(bal, G))
    assert torch.equal(results[0], results[1])
    # Another step (or seed) draws other numbers.
    others = []
    for seed, it in [(7, 13), (7, 14), (7, 15), (8, 12)]:
        bal.reseed(seed, it)
        others.append(update(bal, G))
    assert any(not torch.equal(results[0], o) for o in others)


def test_graddrop_mask_by_hand():
    G = conflicting_G()
    bal = build_balancer({"name": "graddrop", "mode": "param"}, TASKS)
    bal.reseed(3, 41)
    got = update(bal, G)
    u = torch.rand(G.shape[1], generator=torch.Generator().manual_seed(step_seed(3, 41)))
    purity = 0.5 * (1 + G.sum(0) / G.abs().sum(0))
    keep = torch.where(u[None] < purity, G > 0, G < 0)  # the paper's rule, per coordinate
    torch.testing.assert_close(got, (G * keep).sum(0))


@pytest.mark.parametrize("cfg", RANDOM, ids=lambda c: c["name"])
def test_generator_state_round_trips_through_a_checkpoint(cfg):
    G = conflicting_G()
    bal = build_balancer(cfg, TASKS)
    bal.reseed(0, 3)
    for _ in range(2):
        update(bal, G)
    buf = io.BytesIO()
    torch.save(bal.state_dict(), buf)
    buf.seek(0)
    other = build_balancer(cfg, TASKS)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert (other.draws.seed, other.draws.iteration) == (0, 3)
    torch.manual_seed(99)  # the global generator plays no part
    assert torch.equal(update(other, G), update(bal, G))


def test_state_dicts_without_a_generator_state_still_load():
    # Checkpoints written before the balancers had their own generator.
    bal = build_balancer({"name": "gradvac"}, TASKS)
    state = {k: v for k, v in bal.state_dict().items() if k != "_extra_state"}
    build_balancer({"name": "gradvac"}, TASKS).load_state_dict(state)
    build_balancer({"name": "rlw"}, TASKS).load_state_dict({})


@pytest.mark.cuda
@pytest.mark.parametrize("cfg", RANDOM, ids=lambda c: c["name"])
def test_cuda_draws_ignore_the_device_generator_and_round_trip(cfg):
    G = conflicting_G("cuda", P=4096)
    results = []
    for global_seed in (0, 1):
        torch.cuda.manual_seed(global_seed)
        bal = build_balancer(cfg, TASKS).cuda()
        bal.reseed(7, 12)
        results.append(update(bal, G, "cuda"))
    assert torch.equal(results[0], results[1])
    if cfg["name"] == "graddrop":
        g = torch.Generator("cuda").manual_seed(step_seed(7, 12))
        u = torch.rand(G.shape[1], device="cuda", generator=g)
        purity = 0.5 * (1 + G.sum(0) / G.abs().sum(0))
        keep = torch.where(u[None] < purity, G > 0, G < 0)
        torch.testing.assert_close(results[0], (G * keep).sum(0))
    buf = io.BytesIO()
    torch.save(bal.state_dict(), buf)
    buf.seek(0)
    other = build_balancer(cfg, TASKS).cuda()
    other.load_state_dict(torch.load(buf, weights_only=True, map_location="cpu"))
    assert torch.equal(update(other, G, "cuda"), update(bal, G, "cuda"))
