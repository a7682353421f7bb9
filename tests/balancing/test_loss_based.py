"""Loss-based balancers (uncertainty, DWA, RLW, GLS, FAMO) against hand-computed answers."""

import math

import pytest
import torch

import mtvision.balancing.dwa
import mtvision.balancing.famo
import mtvision.balancing.gls
import mtvision.balancing.rlw
import mtvision.balancing.uncertainty  # noqa: F401  (the imports register the methods)
from mtvision.balancing import build_balancer
from mtvision.balancing.draws import step_seed
from mtvision.registry import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TASKS = ["a", "b", "c"]


def as_losses(values, tasks=TASKS, device="cpu"):
    return {t: torch.tensor(float(v), device=device) for t, v in zip(tasks, values, strict=True)}


def floats(w):
    return {t: float(v) for t, v in w.items()}


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def fresh_copy(bal, name, **options):
    """A new instance built from the config, loaded from ``bal``'s state_dict."""
    other = build_balancer({"name": name, **options}, bal.tasks)
    other.load_state_dict(bal.state_dict())
    return other


# -- uncertainty --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", [(0.0, 0.0), (0.3, -0.7)])
def test_uncertainty_total_and_gradients_match_the_formula(device, s):
    bal = build_balancer({"name": "uncertainty"}, ["a", "b"]).to(device)
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor(s))
    x = torch.tensor(2.0, device=device, requires_grad=True)
    La, Lb = x ** 2, 3.0 * x  # 4 and 6 at x = 2
    used = bal.backward({"a": La, "b": Lb})
    pa, pb = 0.5 * math.exp(-s[0]), 0.5 * math.exp(-s[1])
    assert {t: float(v) for t, v in used.items()} == pytest.approx({"a": pa, "b": pb})
    # d/dx [pa x^2 + pb 3x + 0.5 (s_a + s_b)] = 2 pa x + 3 pb;  d/ds_i = 0.5 - p_i L_i
    assert x.grad.item() == pytest.approx(2 * pa * 2.0 + 3 * pb, rel=1e-6)
    torch.testing.assert_close(bal.log_vars.grad.cpu(),
                               torch.tensor([0.5 - pa * 4.0, 0.5 - pb * 6.0]))


def test_uncertainty_log_vars_train_and_scale_is_applied():
    bal = build_balancer({"name": "uncertainty", "init_log_var": 1.0}, ["a", "b"])
    params = [p for p in bal.parameters() if p.requires_grad]
    assert params == [bal.log_vars] and bal.log_vars.tolist() == [1.0, 1.0]
    x = torch.tensor(1.0, requires_grad=True)
    bal.backward({"a": 5.0 * x, "b": 0.1 * x}, scale=lambda t: 10.0 * t)
    p = 0.5 * math.exp(-1.0)
    assert x.grad.item() == pytest.approx(10 * p * 5.1, rel=1e-6)
    # A large loss pulls its log-variance up, a small one down.
    torch.optim.SGD(params, lr=0.01).step()
    assert bal.log_vars[0] > 1.0 > bal.log_vars[1]


def test_uncertainty_with_a_missing_task_trains_only_the_present_log_vars():
    bal = build_balancer({"name": "uncertainty"}, TASKS)
    x = torch.tensor(1.0, requires_grad=True)
    used = bal.backward({"c": 4.0 * x, "a": 2.0 * x})
    assert set(used) == {"a", "c"}
    torch.testing.assert_close(bal.log_vars.grad, torch.tensor([0.5 - 0.5 * 2.0, 0.0,
                                                                0.5 - 0.5 * 4.0]))
    assert floats(bal.weights({"b": torch.tensor(1.0)})) == {"b": 0.5}


def test_uncertainty_state_round_trip_and_validation():
    bal = build_balancer({"name": "uncertainty"}, TASKS)
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([0.1, -0.2, 0.3]))
    losses = as_losses([1.0, 2.0, 3.0])
    assert floats(fresh_copy(bal, "uncertainty").weights(losses)) == floats(bal.weights(losses))
    with pytest.raises(ConfigError, match="init_log_var must be a finite number"):
        build_balancer({"name": "uncertainty", "init_log_var": float("nan")}, TASKS)
    with pytest.raises(ConfigError, match="unknown option 'balancer.init'.*'init_log_var'"):
        build_balancer({"name": "uncertainty", "init": 0.0}, TASKS)


# -- DWA ----------------------------------------------------------------------------------------
DWA_HISTORY = [  # period 2 iterations: periods [0, 1], [2, 3], [4, 5], [6, 7]
    [1.0, 2.0, 4.0], [3.0, 2.0, 2.0],
    [1.0, 1.0, 3.0], [1.0, 2.0, 1.0],
    [0.5, 1.0, 2.0], [0.5, 2.0, 1.0],
    [1.0, 1.0, 1.0], [1.0, 1.0, 1.0],
]


def dwa_expected(avg_prev, avg_prev2, temperature):
    r = [a / b for a, b in zip(avg_prev, avg_prev2, strict=True)]
    return [len(r) * p for p in softmax([x / temperature for x in r])]


@pytest.mark.parametrize("device", DEVICES)
def test_dwa_weights_after_a_known_history(device):
    bal = build_balancer({"name": "dwa", "period": 2, "temperature": 2.0}, TASKS).to(device)
    got = [list(floats(bal.weights(as_losses(v, device=device))).values()) for v in DWA_HISTORY]
    avg = [[(x + y) / 2 for x, y in zip(DWA_HISTORY[2 * k], DWA_HISTORY[2 * k + 1], strict=True)]
           for k in range(3)]  # [2, 2, 3], [1, 1.5, 2], [0.5, 1.5, 1.5]
    expected = [[1.0] * 3] * 4  # equal for the first two periods
    expected += [dwa_expected(avg[1], avg[0], 2.0)] * 2
    expected += [dwa_expected(avg[2], avg[1], 2.0)] * 2
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-6)
    assert sum(got[-1]) == pytest.approx(3.0)
    assert list(bal.parameters()) == []  # nothing for the trainer's optimizer


def test_dwa_task_missing_for_a_period_keeps_its_average():
    bal = build_balancer({"name": "dwa", "period": 1, "temperature": 1.0}, ["a", "b"])
    bal.weights({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    bal.weights({"a": torch.tensor(1.0)})  # b unlabelled: its period average stays 4
    w = floats(bal.weights({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}))
    assert list(w.values()) == pytest.approx(dwa_expected([1.0, 4.0], [2.0, 4.0], 1.0))


def test_dwa_state_round_trip_mid_period():
    bal = build_balancer({"name": "dwa", "period": 3}, TASKS)
    for v in DWA_HISTORY[:7]:  # stops one step into the third period
        bal.weights(as_losses(v))
    other = fresh_copy(bal, "dwa", period=3)
    for v in DWA_HISTORY[:5]:
        assert floats(other.weights(as_losses(v))) == floats(bal.weights(as_losses(v)))


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0.0}, "temperature must be a positive number"),
    ({"period": 0}, "period must be a positive integer"),
    ({"period": 2.5}, "period must be a positive integer"),
    ({"period": True}, "period must be a positive integer"),
    ({"temp": 1.0}, "unknown option 'balancer.temp'.*'temperature'"),
])
def test_dwa_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        build_balancer({"name": "dwa", **options}, TASKS)


# -- RLW ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_rlw_weights_are_random_positive_sum_to_t_and_seeded(device):
    bal = build_balancer({"name": "rlw"}, TASKS)
    losses = as_losses([1.0, 2.0, 3.0], device=device)
    bal.reseed(5, 7)
    draws = [torch.stack(list(bal.weights(losses).values())) for _ in range(3)]
    for w in draws:
        assert w.device.type == device and bool((w > 0).all())
        assert w.sum().item() == pytest.approx(3.0)
    assert not torch.allclose(draws[0], draws[1])
    # The formula by hand, from a generator seeded as step 7 of seed 5 is.
    g = torch.Generator(device).manual_seed(step_seed(5, 7))
    z = torch.randn(3, device=device, generator=g)
    torch.testing.assert_close(draws[0], 3 * torch.exp(z) / torch.exp(z).sum())
    # A copy from the state dict continues the sequence, whatever the global generator does.
    again = fresh_copy(bal, "rlw")
    torch.manual_seed(123)
    torch.testing.assert_close(torch.stack(list(again.weights(losses).values())),
                               torch.stack(list(bal.weights(losses).values())))


def test_rlw_takes_no_options():
    assert list(build_balancer({"name": "rlw"}, TASKS).state_dict()) == ["_extra_state"]
    with pytest.raises(ConfigError, match="unknown option 'balancer.std' for balancer 'rlw'"):
        build_balancer({"name": "rlw", "std": 1.0}, TASKS)


# -- GLS ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_gls_gradient_equals_autograd_of_the_geometric_mean(device):
    theta = torch.tensor([0.5, -1.0, 2.0], device=device, requires_grad=True)

    def task_losses(p):
        return {"a": (p ** 2).sum(), "b": torch.exp(p[1]) + p[2] ** 2, "c": 3.0 * p[0] ** 2}

    bal = build_balancer({"name": "gls"}, TASKS)
    used = bal.backward(task_losses(theta))
    ref = theta.detach().clone().requires_grad_(True)
    L = torch.stack(list(task_losses(ref).values()))
    gls = torch.prod(L) ** (1 / 3)
    gls.backward()
    torch.testing.assert_close(theta.grad, ref.grad)
    # The weights are GLS / (T L_i), so sum_i w_i L_i is the GLS itself.
    assert sum(used[t] * float(v) for t, v in zip(TASKS, L.detach(), strict=True)) == \
        pytest.approx(gls.item(), rel=1e-5)


def test_gls_zero_loss_gets_weight_zero_and_options():
    bal = build_balancer({"name": "gls", "eps": 1e-6}, ["a", "b"])
    w = floats(bal.weights({"a": torch.tensor(0.0), "b": torch.tensor(4.0)}))
    # clamped product: (1e-6 * 4)^(1/2) = 2e-3; b gets 2e-3 / (2 * 4), a (flat clamp) gets 0
    assert w == pytest.approx({"a": 0.0, "b": 2.5e-4})
    assert floats(fresh_copy(bal, "gls", eps=1e-6).weights({"a": torch.tensor(0.0),
                                                            "b": torch.tensor(4.0)})) == w
    with pytest.raises(ConfigError, match="eps must be a positive number"):
        build_balancer({"name": "gls", "eps": 0}, TASKS)


# -- FAMO ---------------------------------------------------------------------------------------
FAMO_HISTORY = [[1.0, 2.0, 4.0], [0.5, 1.8, 3.0], [0.4, 1.0, 2.9]]


def famo_by_hand(history, w_lr, gamma, b=(0.0, 0.0, 0.0)):
    """Algorithm 1 with L(t+1) taken from the next step, in plain floats."""
    eps = 1e-8
    xi = [0.0] * len(b)
    out, prev = [], None
    for losses in history:
        D = [max(L - bi, 0.0) + eps for L, bi in zip(losses, b, strict=True)]
        if prev is not None:
            z = softmax(xi)
            dlog = [math.log(p) - math.log(d) for p, d in zip(prev, D, strict=True)]
            zd = sum(zi * di for zi, di in zip(z, dlog, strict=True))
            delta = [zi * (di - zd) for zi, di in zip(z, dlog, strict=True)]  # J^T dlog
            xi = [x - w_lr * (dl + gamma * x) for x, dl in zip(xi, delta, strict=True)]
        z = softmax(xi)
        c = sum(zi / d for zi, d in zip(z, D, strict=True))
        out.append([zi / d / c for zi, d in zip(z, D, strict=True)])
        prev = D
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_famo_weights_after_a_known_history(device):
    opts = {"w_lr": 0.5, "gamma": 0.1, "min_losses": {"a": 0.2}}
    bal = build_balancer({"name": "famo", **opts}, TASKS).to(device)
    got = [list(floats(bal.weights(as_losses(v, device=device))).values())
           for v in FAMO_HISTORY]
    expected = famo_by_hand(FAMO_HISTORY, 0.5, 0.1, b=(0.2, 0.0, 0.0))
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-5)
        assert sum(g) == pytest.approx(1.0)  # the paper's convex combination
    # The first step is inverse-loss weighting: z uniform, w_i proportional to 1 / D_i.
    # D = [0.8, 2, 4], so 1 / D = [1.25, 0.5, 0.25] normalised.
    assert got[0] == pytest.approx([0.625, 0.25, 0.125], rel=1e-6)
    assert list(bal.parameters()) == []


def test_famo_adam_matches_torch_adam_on_the_logits():
    """Like the authors' code: the softmax VJP of the log-loss decrease, stepped by Adam."""
    bal = build_balancer({"name": "famo", "logits_optimizer": "adam"}, TASKS)
    got = [floats(bal.weights(as_losses(v))) for v in FAMO_HISTORY]
    xi = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=0.025, weight_decay=0.001)
    prev = None
    for step, v in enumerate(FAMO_HISTORY):
        D = torch.tensor(v, dtype=torch.float64) + 1e-8
        if prev is not None:
            delta = prev.log() - D.log()
            (xi.grad,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
            opt.step()
        z = torch.softmax(xi.detach(), 0)
        expected = (z / D) / (z / D).sum()
        assert list(got[step].values()) == pytest.approx(expected.tolist(), rel=1e-5)
        prev = D


def test_famo_missing_task_and_state_round_trip():
    bal = build_balancer({"name": "famo", "w_lr": 0.5}, TASKS)
    bal.weights(as_losses(FAMO_HISTORY[0]))
    w = floats(bal.weights({"a": torch.tensor(0.5), "c": torch.tensor(3.0)}))
    assert set(w) == {"a", "c"} and sum(w.values()) == pytest.approx(1.0)
    other = fresh_copy(bal, "famo", w_lr=0.5)
    for v in FAMO_HISTORY:
        assert floats(other.weights(as_losses(v))) == floats(bal.weights(as_losses(v)))
    assert set(bal.state_dict()) == {"logits", "prev_d", "prev_present", "adam_m", "adam_v",
                                     "adam_step"}


@pytest.mark.parametrize("options, message", [
    ({"w_lr": 0.0}, "w_lr must be a positive number"),
    ({"gamma": -1.0}, "gamma must be a non-negative number"),
    ({"logits_optimizer": "rmsprop"}, "logits_optimizer must be one of sgd, adam"),
    ({"min_losses": {"z": 0.0}}, "min_losses names task 'z'"),
    ({"min_losses": {"a": "low"}}, "min_losses.a must be a finite number"),
    ({"lr": 0.1}, "unknown option 'balancer.lr'.*'w_lr'"),
])
def test_famo_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        build_balancer({"name": "famo", **options}, TASKS)


# -- all methods --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["uncertainty", "dwa", "rlw", "gls", "famo"])
def test_builds_by_name_and_trains_a_step(name):
    bal = build_balancer({"name": name}, TASKS)
    theta = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    for _ in range(3):
        theta.grad = None
        losses = {t: (theta[i] - 0.1) ** 2 + 0.5 for i, t in enumerate(TASKS)}
        used = bal.backward(losses)
        assert set(used) == set(TASKS) and all(math.isfinite(w) and w >= 0 for w in used.values())
        assert bool(torch.isfinite(theta.grad).all()) and bool((theta.grad != 0).all())


@pytest.mark.parametrize("name", ["uncertainty", "dwa", "famo"])
def test_per_task_state_rejects_an_unknown_task(name):
    with pytest.raises(KeyError, match="unknown task.*nope"):
        build_balancer({"name": name}, TASKS).weights({"nope": torch.tensor(1.0)})
