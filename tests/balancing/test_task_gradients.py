"""The gradient-balancing engine: task gradients in the rows of one buffer, the update in the
shared parameters' flat .grad (param mode) or back through the backbone (feature mode)."""

from __future__ import annotations

import torch
from torch import nn

from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.task_gradients import FeatureCut, TaskGradients, pairwise_cosines


class FixedRows(GradientBalancer):
    """Test double: the update is w^T G for constant w."""

    def __init__(self, tasks, mode="param", w=(0.25, 2.0)):
        super().__init__(tasks, mode)
        self.register_buffer("w", torch.tensor(w))

    def task_weights(self, gram, losses):
        return self.w[: gram.shape[0]]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6))
        self.head_a = nn.Linear(6, 1)
        self.head_b = nn.Linear(6, 3)

    def feats(self, x):
        return {"f": self.backbone(x)}

    def losses(self, f):
        return {"a": self.head_a(f).pow(2).mean(), "b": self.head_b(f).sin().sum()}


def flat_grads(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


def test_rows_equal_autograd_and_buffers_are_reused():
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    tg = TaskGradients()
    for step in range(2):
        losses = m.losses(m.feats(x)["f"])
        ref = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(v, shared,
                                                                      retain_graph=True)])
               for v in losses.values()]
        G = tg.collect(list(losses.values()), shared)
        if step == 0:
            ptr = G.data_ptr()
        assert G.data_ptr() == ptr  # no new buffer on the next step
        torch.testing.assert_close(G, torch.stack(ref))
        assert all(p.grad is None for p in shared)
    # Each head got its own task's gradient.
    assert m.head_a.weight.grad is not None and m.head_b.weight.grad is not None


def test_param_mode_writes_the_update_into_one_flat_buffer():
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    losses = m.losses(m.feats(x)["f"])
    ref = torch.autograd.grad(0.25 * losses["a"] + 2.0 * losses["b"], shared, retain_graph=True)
    bal = FixedRows(["a", "b"])
    w = bal.backward(losses, shared)
    torch.testing.assert_close(flat_grads(shared), torch.cat([g.reshape(-1) for g in ref]))
    # The .grad tensors are consecutive views of one buffer.
    base = shared[0].grad.data_ptr()
    off = 0
    for p in shared:
        assert p.grad.data_ptr() == base + off * p.grad.element_size()
        off += p.numel()
    assert float(w["a"]) == 0.25 and float(w["b"]) == 2.0
    cos = pairwise_cosines(bal.stats["gram"], ["a", "b"])
    G = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(v, shared,
                                                                           retain_graph=True)])
                     for v in m.losses(m.feats(x)["f"]).values()])
    expected = torch.nn.functional.cosine_similarity(G[0], G[1], dim=0)
    torch.testing.assert_close(cos["cos/a|b"], expected, rtol=1e-5, atol=1e-6)


def test_loss_scale_is_removed_before_the_method_and_kept_in_the_update():
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    plain = FixedRows(["a", "b"])
    plain.backward(m.losses(m.feats(x)["f"]), shared)
    g1, gram1 = flat_grads(shared).clone(), plain.stats["gram"]
    scaled = FixedRows(["a", "b"])
    scaled.backward(m.losses(m.feats(x)["f"]), shared, scale=lambda t: t * 64.0)
    torch.testing.assert_close(flat_grads(shared), 64.0 * g1)
    torch.testing.assert_close(scaled.stats["gram"], gram1)


def test_feature_mode_equals_the_chain_rule():
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    feats = m.feats(x)
    cut, head_feats = FeatureCut.of(feats, ["f"])
    losses = m.losses(head_feats["f"])
    bal = FixedRows(["a", "b"], mode="feature")
    bal.backward(losses, shared, cut)
    # w^T of the feature gradients, pushed through the backbone, is the gradient of the
    # weighted loss sum with respect to the backbone.
    m2 = Tiny()
    l2 = m2.losses(m2.feats(x)["f"])
    (0.25 * l2["a"] + 2.0 * l2["b"]).backward()
    torch.testing.assert_close(flat_grads(shared), flat_grads(list(m2.backbone.parameters())))
    # The heads saw their own losses only, unweighted.
    m3 = Tiny()
    m3.losses(m3.feats(x)["f"])["a"].backward()
    torch.testing.assert_close(m.head_a.weight.grad, m3.head_a.weight.grad)
    # The Gram matrix is that of the feature gradients.
    f = feats["f"].detach().requires_grad_()
    lf = m.losses(f)
    rows = torch.stack([torch.autograd.grad(v, f, retain_graph=True)[0].reshape(-1)
                        for v in lf.values()])
    torch.testing.assert_close(bal.stats["gram"], rows @ rows.T, rtol=1e-5, atol=1e-6)


def test_fewer_tasks_in_a_batch_use_the_first_rows():
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    bal = FixedRows(["a", "b"])
    bal.backward(m.losses(m.feats(x)["f"]), shared)
    only_a = {"a": m.losses(m.feats(x)["f"])["a"]}
    w = bal.backward(only_a, shared)
    ref = torch.autograd.grad(0.25 * m.losses(m.feats(x)["f"])["a"], shared)
    torch.testing.assert_close(flat_grads(shared), torch.cat([g.reshape(-1) for g in ref]))
    assert set(w) == {"a"}


def test_feature_mode_under_bf16_autocast():
    # AMP on a GPU gives bf16 features: the rows, the Gram matrix and the update then follow
    # the features' dtype; CPU autocast exercises the same path.
    m = Tiny()
    shared = list(m.backbone.parameters())
    x = torch.randn(4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = m.feats(x)
        cut, head_feats = FeatureCut.of(feats, ["f"])
        losses = m.losses(head_feats["f"])
    assert cut.leaves[0].dtype == torch.bfloat16
    bal = FixedRows(["a", "b"], mode="feature")
    bal.backward({k: v.float() for k, v in losses.items()}, shared, cut)
    m2 = Tiny()
    l2 = m2.losses(m2.feats(x)["f"])
    (0.25 * l2["a"] + 2.0 * l2["b"]).backward()
    ref = flat_grads(list(m2.backbone.parameters()))
    got = flat_grads(shared)
    assert bal.stats["gram"].dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=5e-2, atol=5e-2 * float(ref.abs().max()))
