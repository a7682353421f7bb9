"""Fixed / equal weighting through the Balancer interface."""

import pytest
import torch

from mtvision.balancing import build_balancer
from mtvision.registry import ConfigError


def test_weighted_sum_gradient_matches_hand_computed():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = {"seg": (w[0] * 3.0) ** 2, "cls": w.sum() * 5.0}
    bal = build_balancer({"name": "fixed", "weights": {"seg": 0.5}}, ["seg", "cls"])
    used = bal.backward(losses)
    assert {t: float(v) for t, v in used.items()} == {"seg": 0.5, "cls": 1.0}
    # d/dw [0.5 * 9 w0^2 + 5 (w0 + w1)] = [9 w0 + 5, 5]
    torch.testing.assert_close(w.grad, torch.tensor([14.0, 5.0]))


def test_equal_weights_by_default_and_scale_hook():
    w = torch.tensor(2.0, requires_grad=True)
    bal = build_balancer({"name": "fixed"}, ["a", "b"])
    bal.backward({"a": w * 1.0, "b": w * 3.0}, scale=lambda t: t * 10)
    assert w.grad.item() == pytest.approx(40.0)


def test_unknown_task_in_weights_is_an_error():
    with pytest.raises(ConfigError, match="names task 'dept'"):
        build_balancer({"name": "fixed", "weights": {"dept": 1.0}}, ["det", "seg"])
    with pytest.raises(ConfigError, match="unknown balancer 'fixd'.*'fixed'"):
        build_balancer({"name": "fixd"}, ["det"])
