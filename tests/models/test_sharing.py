"""Parameter-sharing architectures (model.sharing): each trains the tiny demo config through the
Trainer; soft sharing's penalty, cross-stitch mixing and MTAN attention against hand-computed
values; the configuration errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtvision.config import load_config
from mtvision.engine.optim import build_optimizer
from mtvision.engine.trainer import Trainer
from mtvision.models import build_model
from mtvision.models.heads.base import FeatureInfo
from mtvision.models.sharing import CrossStitchUnit, SharingParts, SoftSharing
from mtvision.registry import BACKBONES, ConfigError

HEADS = {"seg": {"name": "fpn_seg", "num_classes": 3, "channels": 16},
         "cls": {"name": "linear", "num_classes": 2}}


def model_cfg(sharing: dict, heads: dict = HEADS, **extra) -> dict:
    return {"backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 32},
            "heads": heads, "sharing": sharing, **extra}


def demo_cfg(repo_root, shapes_root, overrides_for, *extra: str) -> dict:
    return load_config(repo_root / "configs" / "demo.yaml",
                       [*overrides_for(shapes_root), *extra])


@pytest.mark.parametrize("sharing", ["hard", "soft", "cross_stitch", "mtan"])
def test_architecture_trains_the_demo_model(repo_root, shapes_root, overrides_for, tmp_path,
                                            sharing):
    cfg = demo_cfg(repo_root, shapes_root, overrides_for, f"model.sharing={{name: {sharing}}}")
    tr = Trainer(cfg, tmp_path, progress=False)
    assert tr.model.sharing.name == sharing
    batch = next(iter(tr.train_loader))
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    outs = [tr.train_step(batch) for _ in range(2)]
    for out in outs:
        assert out is not None and all(math.isfinite(float(v)) for v in out.values()), out
        assert {"det", "seg", "edge", "cls"} <= set(out)
    changed = {k for k, v in tr.model.named_parameters() if not torch.equal(before[k], v)}
    tasks = tr.model.task_names
    if sharing in ("soft", "cross_stitch"):  # every task's own backbone copy trains
        assert all(any(k.startswith(f"backbone.{t}.") for k in changed) for t in tasks)
    else:
        assert any(k.startswith("backbone.") for k in changed)
    if sharing in ("cross_stitch", "mtan"):
        assert any(k.startswith("sharing.") for k in changed)
    if sharing == "soft":  # identical copies at step 1, pulled apart by step 2
        assert float(outs[0]["sharing_penalty"]) == 0.0
        assert float(outs[1]["sharing_penalty"]) > 0.0
    else:
        assert "sharing_penalty" not in outs[1]


def test_mtan_with_feature_mode_balancing(repo_root, shapes_root, overrides_for, tmp_path):
    cfg = demo_cfg(repo_root, shapes_root, overrides_for, "model.sharing={name: mtan}",
                   "balancer={name: mgda, mode: feature}")
    tr = Trainer(cfg, tmp_path, progress=False)
    batch = next(iter(tr.train_loader))
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    out = tr.train_step(batch)
    assert out is not None and all(math.isfinite(float(v)) for v in out.values())
    changed = {k for k, v in tr.model.named_parameters() if not torch.equal(before[k], v)}
    assert {k.split(".")[2] for k in changed if k.startswith("sharing.attention.")} == {
        "det", "seg", "edge", "cls"}
    assert any(k.startswith("backbone.") for k in changed)


def test_soft_penalty_by_hand():
    m = build_model(model_cfg({"name": "soft", "penalty_weight": 0.5}))
    assert m.regularization().item() == 0.0  # the copies start identical
    w = m.backbone["cls"].stem[0].weight
    with torch.no_grad():
        w[0, 0, 0, 0] += 0.25
    torch.testing.assert_close(m.regularization(), torch.tensor(0.5 * 0.25**2))
    with torch.no_grad():
        m.backbone["seg"].layers[3][1].bn2.bias.add_(0.1)  # 512 channels
    torch.testing.assert_close(m.regularization(), torch.tensor(0.5 * (0.0625 + 512 * 0.01)))
    # The necks are tied only with include_neck.
    with torch.no_grad():
        m.neck["seg"].fpn.layer_blocks[0][0].bias[0] += 1.0
    torch.testing.assert_close(m.regularization(), torch.tensor(0.5 * (0.0625 + 5.12)))
    m.sharing.include_neck = True
    torch.testing.assert_close(m.regularization(), torch.tensor(0.5 * (0.0625 + 5.12 + 1.0)))


def test_soft_penalty_against_pairwise_reference_and_gradient():
    torch.manual_seed(0)
    # Three tiny "backbones": copies of one Linear, then drawn apart.
    sharing = SoftSharing(SharingParts(nn.Linear(3, 2), None, dict.fromkeys("abc")), 0.1)
    copies, _ = sharing.encoders(SharingParts(nn.Linear(3, 2), None, {}))
    assert sharing.regularization(copies, None).item() == 0.0
    with torch.no_grad():
        for p in copies.parameters():
            p.normal_()
    ref = sum(((pa - pb) ** 2).sum() for x, y in (("a", "b"), ("a", "c"), ("b", "c"))
              for pa, pb in zip(copies[x].parameters(), copies[y].parameters(), strict=True))
    reg = sharing.regularization(copies, None)
    torch.testing.assert_close(reg, 0.1 * ref)
    reg.backward()
    # dR/dtheta_a = 2 lambda sum_b (theta_a - theta_b)
    wa, wb, wc = (copies[t].weight.detach() for t in ("a", "b", "c"))
    torch.testing.assert_close(copies["a"].weight.grad, 0.2 * ((wa - wb) + (wa - wc)))


def test_cross_stitch_unit_init_and_hand_mix():
    u = CrossStitchUnit(channels=4, num_tasks=3, alpha=0.9)
    assert u.weight.shape == (4, 3, 3)
    expected = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    torch.testing.assert_close(u.weight.detach(), expected.expand(4, 3, 3))
    u2 = CrossStitchUnit(channels=2, num_tasks=2)
    with torch.no_grad():  # weight[c, t, s]: the share of task s's channel c in task t
        u2.weight.copy_(torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.0], [0.0, -1.0]]]))
    xa = torch.tensor([1.0, 10.0]).view(1, 2, 1, 1)
    xb = torch.tensor([100.0, 1000.0]).view(1, 2, 1, 1)
    oa, ob = u2([xa, xb])
    assert oa.flatten().tolist() == [201.0, 5.0]  # 1*1 + 2*100, 0.5*10 + 0*1000
    assert ob.flatten().tolist() == [403.0, -1000.0]  # 3*1 + 4*100, 0*10 - 1*1000
    # Channels-last activations (Swin's stages) are mixed the same way.
    last = CrossStitchUnit(channels=2, num_tasks=2, channel_dim=-1)
    with torch.no_grad():
        last.weight.copy_(u2.weight)
    la, lb = last([xa.permute(0, 2, 3, 1), xb.permute(0, 2, 3, 1)])
    assert torch.equal(la.permute(0, 3, 1, 2), oa) and torch.equal(lb.permute(0, 3, 1, 2), ob)


def test_cross_stitch_identity_gives_independent_networks():
    torch.manual_seed(0)
    m = build_model(model_cfg({"name": "cross_stitch", "alpha": 1.0})).eval()
    with torch.no_grad():  # make the copies differ
        for p in m.backbone["cls"].parameters():
            p.mul_(1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.extract(x)
        for t in ("seg", "cls"):
            ref = m.backbone[t](x)
            ref.update(m.neck[t](ref))
            for n, f in ref.items():
                torch.testing.assert_close(feats[f"{t}/{n}"], f, rtol=0, atol=0)
        assert set(m.sharing.task_features(feats, "cls")) == set(ref)
        m.sharing.units[2].weight.fill_(0.5)  # now c3 and after are the tasks' mean
        mixed = m.extract(x)
        torch.testing.assert_close(mixed["seg/c3"], mixed["cls/c3"])
        assert not torch.allclose(mixed["seg/c2"], mixed["cls/c2"])
    opt = build_optimizer(m, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05,
                              "betas": [0.9, 0.999], "backbone_lr_mult": 0.1, "momentum": 0.9})
    unit_ids = {id(p) for p in m.sharing.units.parameters()}
    for g in opt.param_groups:
        if any(id(p) in unit_ids for p in g["params"]):
            assert g["weight_decay"] == 0.0 and g["lr"] == 1e-3


def test_mtan_attention_in_unit_interval_and_per_task():
    torch.manual_seed(0)
    heads = {"det": {"name": "fcos", "num_classes": 2, "in_features": ["p3", "p4", "p5"]},
             **HEADS}
    m = build_model(model_cfg({"name": "mtan", "hidden": 8}, heads))
    x = torch.randn(2, 3, 64, 64)
    feats = m.extract(x)
    per_task = {t: m.sharing.task_features(feats, t) for t in ("det", "seg", "cls")}
    for name in ("p2", "p3", "p4", "p5"):  # the levels fpn_seg reads
        a = m.sharing.attention["seg"][name].mask(feats[name])
        assert a.shape == feats[name].shape and bool(((a > 0) & (a < 1)).all())
        torch.testing.assert_close(per_task["seg"][name], feats[name] * a)
    assert set(m.sharing.attention["det"]) == {"p3", "p4", "p5"}
    assert set(m.sharing.attention["cls"]) == {"c5"}
    assert not torch.allclose(per_task["det"]["p3"], per_task["seg"]["p3"])  # own features
    assert not torch.allclose(per_task["cls"]["c5"], feats["c5"])
    assert torch.equal(per_task["seg"]["c5"], feats["c5"])  # seg does not read c5
    # The masks are task-specific: not shared; the feature cut is before attention.
    shared = {id(p) for p in m.shared_parameters()}
    assert shared == {id(p) for p in (*m.backbone.parameters(), *m.neck.parameters())}
    assert m.head_inputs() == ["p3", "p4", "p5", "p2", "c5"]


def test_cross_stitch_needs_resnet_like_backbone():
    @BACKBONES.register("toy_plain")
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.feature_info = {"c2": FeatureInfo(8, 4)}

        def forward(self, x):
            return {"c2": self.conv(x)}

    try:
        cls = {"name": "linear", "num_classes": 2, "in_features": ["c2"]}
        cfg = {**model_cfg({"name": "cross_stitch"}, {"cls": cls}),
               "backbone": {"name": "toy_plain"}, "neck": None}
        with pytest.raises(ConfigError, match=r"'stem' and 'layers'.*resnet18.*'toy_plain'"):
            build_model(cfg)
    finally:
        BACKBONES.unregister("toy_plain")


def test_config_errors_are_one_line(repo_root, shapes_root, overrides_for, tmp_path):
    def error(*extra: str, trainer: bool = False) -> str:
        with pytest.raises(ConfigError) as e:
            cfg = demo_cfg(repo_root, shapes_root, overrides_for, *extra)
            build_model(cfg["model"]) if not trainer else Trainer(cfg, tmp_path, progress=False)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "unknown sharing architecture 'sof'" in error("model.sharing={name: sof}")
    assert "did you mean 'soft'" in error("model.sharing={name: sof}")
    assert "unknown key 'model.sharing.alpha'" in error("model.sharing={name: soft, alpha: 1}")
    assert "model.aux_tasks: depth not among" in error("model.aux_tasks=[depth]")
    msg = error("model.sharing={name: soft}", "balancer={name: mgda, mode: feature}",
                trainer=True)
    assert "balancer.mode 'feature'" in msg and "model.sharing 'soft'" in msg
    msg = error("model.sharing={name: soft}", "balancer={name: pcgrad}", trainer=True)
    assert "balancer.mode 'param'" in msg and "balancer.name=fixed" in msg
    msg = error("model.sharing={name: cross_stitch}", "balancer={name: mgda, mode: feature}",
                trainer=True)
    assert "one backbone per task" in msg
