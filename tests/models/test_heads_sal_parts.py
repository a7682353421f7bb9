"""The saliency head (fpn_sal: balanced BCE) and the human-parts head (fpn_parts), alone and in a
PASCAL-Context multi-task model with partial labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtvision.models import build_model
from mtvision.models.heads import FeatureInfo, FPNPartsHead, FPNSaliencyHead
from mtvision.registry import HEADS

INFO = {f"p{k}": FeatureInfo(16, 2 ** k) for k in range(2, 6)}


def features(b: int, h: int, w: int, seed: int = 0, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(b, 16, h // fi.stride, w // fi.stride, generator=g).to(device)
            for n, fi in INFO.items()}


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, balanced: bool = True
                 ) -> torch.Tensor:
    """HED eq. 2 written out: per image, positives weighted by the share of negatives and
    negatives by the share of positives; summed and divided by the non-ignored pixels."""
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for x, t in zip(logits[:, 0].double(), target, strict=True):
        valid = t != 255
        pos, neg = valid & (t == 1), valid & (t == 0)
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        w_pos = n_neg / (n_pos + n_neg) if balanced else 1.0
        w_neg = n_pos / (n_pos + n_neg) if balanced else 1.0
        total = total - w_pos * F.logsigmoid(x[pos]).sum() - w_neg * F.logsigmoid(-x[neg]).sum()
        count += int(valid.sum())
    return total / count


def sal_target(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(b, h, w, generator=g) < 0.3).long()
    t[torch.rand(b, h, w, generator=g) < 0.1] = 255
    return t


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_saliency_loss_is_balanced_bce(balanced: bool, backend: str) -> None:
    torch.manual_seed(0)
    head = HEADS.build({"name": "fpn_sal", "channels": 8, "balanced": balanced},
                       feature_info=INFO)
    assert isinstance(head, FPNSaliencyHead) and head.task == "sal"
    head.loss_backend = backend
    out = head(features(3, 32, 48), (32, 48))
    assert out.shape == (3, 1, 32, 48)
    target = sal_target(3, 32, 48)
    present = torch.tensor([True, False, True])
    loss = head.loss(out, target, present)
    keep = present.nonzero().flatten()
    ref = balanced_bce(out[keep], target[keep], balanced)
    assert set(loss) == {"bce"}
    torch.testing.assert_close(loss["bce"].double(), ref, rtol=1e-5, atol=1e-6)
    loss["bce"].backward()
    assert head.predictor.weight.grad is not None
    probs = head.postprocess(out, (32, 48))
    assert len(probs) == 3
    torch.testing.assert_close(probs[0], out[0, 0].sigmoid())


def test_parts_head_is_a_seg_head_of_its_own_task() -> None:
    head = HEADS.build({"name": "fpn_parts", "num_classes": 7, "channels": 8},
                       feature_info=INFO)
    assert isinstance(head, FPNPartsHead) and head.task == "parts"
    out = head(features(2, 32, 32), (32, 32))
    assert out.shape == (2, 7, 32, 32)
    target = torch.randint(0, 7, (2, 32, 32))
    loss = head.loss(out, target, torch.tensor([False, True]))
    torch.testing.assert_close(loss["ce"], F.cross_entropy(out[1:], target[1:]))


PASCAL_HEADS = {"seg": {"name": "fpn_seg", "num_classes": 21, "channels": 16},
                "parts": {"name": "fpn_parts", "num_classes": 7, "channels": 16},
                "sal": {"name": "fpn_sal", "channels": 16},
                "normals": {"name": "fpn_normals", "channels": 16},
                "edge": {"name": "hed", "side_channels": 4}}


@pytest.mark.parametrize("heads", [PASCAL_HEADS, {k: PASCAL_HEADS[k] for k in ("seg", "sal")}],
                         ids=["five_tasks", "seg_sal"])
def test_fused_dense_losses_equal_the_heads_own(heads: dict) -> None:
    cfg = {"backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 16},
           "heads": heads, "loss_backend": "torch"}
    torch.manual_seed(0)
    fused = build_model(cfg)
    torch.manual_seed(0)
    plain = build_model({**cfg, "fuse_dense_losses": False})
    x = torch.randn(2, 3, 64, 64)
    out = fused(x)
    targets = {"seg": torch.randint(0, 21, (2, 64, 64)), "parts": torch.randint(0, 7, (2, 64, 64)),
               "sal": sal_target(2, 64, 64), "edge": sal_target(2, 64, 64, seed=3),
               "normals": F.normalize(torch.randn(2, 3, 64, 64), dim=1)}
    present = {t: torch.tensor([True, True]) for t in heads}
    if "parts" in heads:
        present["parts"] = torch.tensor([False, True])  # one image without people
    a = fused.losses(out, targets, present)
    b = plain.losses(out, targets, present)
    assert list(a) == list(heads)
    for task in heads:
        for k in a[task]:
            torch.testing.assert_close(a[task][k], b[task][k], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_saliency_loss_on_cuda_matches_the_reference() -> None:
    torch.manual_seed(0)
    head = HEADS.build({"name": "fpn_sal", "channels": 8}, feature_info=INFO).cuda()
    head.loss_backend = "triton"
    out = head(features(2, 64, 64, device="cuda"), (64, 64))
    target = sal_target(2, 64, 64).cuda()
    loss = head.loss(out, target, torch.tensor([True, True], device="cuda"))["bce"]
    torch.testing.assert_close(loss.double().cpu(), balanced_bce(out.cpu(), target.cpu()),
                               rtol=1e-4, atol=1e-5)
    loss.backward()
