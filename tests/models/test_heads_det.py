"""Tests of the FCOS detection head (mtvision.models.heads.detection)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from mtvision.models.heads import FCOSHead, FeatureInfo
from mtvision.models.heads.detection import decode_ltrb, default_size_ranges
from mtvision.registry import HEADS, ConfigError

STRIDES = {"c1": 2, "c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}
P_CH = 32


def det_feature_info() -> dict[str, FeatureInfo]:
    return {n: FeatureInfo(16 if n.startswith("c") else P_CH, s) for n, s in STRIDES.items()}


def det_features(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    info = det_feature_info()
    return {
        n: torch.randn(batch, fi.channels, math.ceil(h / fi.stride), math.ceil(w / fi.stride),
                       generator=g)
        for n, fi in info.items()
    }


def make_head(**kw) -> FCOSHead:
    torch.manual_seed(0)
    return FCOSHead(det_feature_info(), num_classes=kw.pop("num_classes", 3), **kw)


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


# ---------------------------------------------------------------- construction


def test_registry_and_config() -> None:
    assert HEADS.get("fcos") is FCOSHead
    head = HEADS.build({"name": "fcos", "num_classes": 4, "num_convs": 1},
                       feature_info=det_feature_info())
    assert isinstance(head, FCOSHead) and head.task == "det"
    assert head.size_ranges == [(0.0, 64.0), (64.0, 128.0), (128.0, math.inf)]
    assert default_size_ranges([4, 8, 16, 32]) == [
        (0.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, math.inf)
    ]
    with pytest.raises(ConfigError, match="p6"):
        FCOSHead(det_feature_info(), num_classes=3, in_features=("p3", "p6"))
    with pytest.raises(ConfigError, match="equal channels"):
        FCOSHead(det_feature_info(), num_classes=3, in_features=("c3", "p4"))
    with pytest.raises(ConfigError, match="size_ranges"):
        FCOSHead(det_feature_info(), num_classes=3, size_ranges=[[0, 64], [64, 1e8]])
    with pytest.raises(ConfigError, match="unknown option"):
        HEADS.build({"name": "fcos", "num_classes": 3, "nms_thres": 0.5},
                    feature_info=det_feature_info())
    # RetinaNet prior: every location starts at foreground probability prior_prob.
    assert torch.allclose(head.cls_logits.bias.sigmoid(), torch.full((4,), 0.01))


def test_forward_shapes() -> None:
    head = make_head()
    out = head(det_features(2, 64, 96), (64, 96))
    n = 8 * 12 + 4 * 6 + 2 * 3
    assert out["level_sizes"] == [96, 24, 6]
    assert out["cls"].shape == (2, n, 3)
    assert out["box"].shape == (2, n, 4)
    assert out["ctr"].shape == (2, n)
    assert out["points"].shape == (n, 2) and out["strides"].shape == (n,)
    assert (out["box"] > 0).all()
    # Row-major location centres s // 2 + j * s.
    assert out["points"][0].tolist() == [4.0, 4.0]
    assert out["points"][1].tolist() == [12.0, 4.0]
    assert out["points"][12].tolist() == [4.0, 12.0]
    assert out["points"][96].tolist() == [8.0, 8.0]
    assert out["strides"][95] == 8 and out["strides"][96] == 16 and out["strides"][-1] == 32


# ---------------------------------------------------------------- target assignment


def test_assign_one_box_center_sampling() -> None:
    head = make_head(in_features=("p3",))
    assert head.size_ranges == [(0.0, math.inf)]
    points = FCOSHead.level_points(8, 8, 8)  # x, y in {4, 12, ..., 60}
    strides = torch.full((64,), 8.0)
    # Box centre (25, 20); radius 1.5 * 8 = 12 -> sampling region (13, 10)-(37, 30) after
    # clipping to the box, so x in {20, 28, 36} and y in {12, 20, 28} are positive.
    cls_t, reg_t, ctr_t = head.assign_targets(
        points, strides, [64], torch.tensor([[10.0, 10.0, 40.0, 30.0]]), torch.tensor([2])
    )
    pos = cls_t != 3
    got = {tuple(p) for p in points[pos].tolist()}
    assert got == {(x, y) for x in (20.0, 28.0, 36.0) for y in (12.0, 20.0, 28.0)}
    assert (cls_t[pos] == 2).all()
    assert (reg_t[~pos] == 0).all() and (ctr_t[~pos] == 0).all()

    def at(x: float, y: float) -> int:
        return int(((points[:, 0] == x) & (points[:, 1] == y)).nonzero())

    # (20, 12): l=10, t=2, r=20, b=18; centerness sqrt(10/20 * 2/18) = sqrt(1/18).
    assert reg_t[at(20, 12)].tolist() == [10.0, 2.0, 20.0, 18.0]
    assert ctr_t[at(20, 12)].item() == pytest.approx(math.sqrt(1 / 18))
    # (28, 20): l=18, t=10, r=12, b=10; centerness sqrt(12/18 * 10/10) = sqrt(2/3).
    assert reg_t[at(28, 20)].tolist() == [18.0, 10.0, 12.0, 10.0]
    assert ctr_t[at(28, 20)].item() == pytest.approx(math.sqrt(2 / 3))
    # (36, 28): l=26, t=18, r=4, b=2; centerness sqrt(4/26 * 2/18).
    assert reg_t[at(36, 28)].tolist() == [26.0, 18.0, 4.0, 2.0]
    assert ctr_t[at(36, 28)].item() == pytest.approx(math.sqrt(4 / 26 * 2 / 18))

    # Without center sampling every location strictly inside the box is positive:
    # x in {12, 20, 28, 36}, y in {12, 20, 28}.
    head.center_sampling_radius = 0.0
    cls_t, reg_t, _ = head.assign_targets(
        points, strides, [64], torch.tensor([[10.0, 10.0, 40.0, 30.0]]), torch.tensor([2])
    )
    got = {tuple(p) for p in points[cls_t != 3].tolist()}
    assert got == {(x, y) for x in (12.0, 20.0, 28.0, 36.0) for y in (12.0, 20.0, 28.0)}
    assert reg_t[at(12, 12)].tolist() == [2.0, 2.0, 28.0, 18.0]

    # The sampling square is clipped to the box: for the 8x8 box (22, 22)-(30, 30) the square
    # (14, 14)-(38, 38) would hold 9 locations, but only (28, 28) lies inside the box.
    head.center_sampling_radius = 1.5
    cls_t, reg_t, ctr_t = head.assign_targets(
        points, strides, [64], torch.tensor([[22.0, 22.0, 30.0, 30.0]]), torch.tensor([0])
    )
    assert (cls_t != 3).nonzero().reshape(-1).tolist() == [at(28, 28)]
    assert reg_t[at(28, 28)].tolist() == [6.0, 6.0, 2.0, 2.0]
    assert ctr_t[at(28, 28)].item() == pytest.approx(1 / 3)


def test_assign_size_ranges_pick_the_level() -> None:
    head = make_head()  # p3, p4, p5: [0, 64], [64, 128], [128, inf]
    feats = det_features(1, 256, 256)
    out = head(feats, (256, 256))
    cls_t, reg_t, ctr_t = head.assign_targets(
        out["points"], out["strides"], out["level_sizes"],
        torch.tensor([[0.0, 0.0, 160.0, 160.0]]), torch.tensor([1]),
    )
    pos = (cls_t != 3).nonzero().reshape(-1)
    # p3 (stride 8): sampling square (68, 68)-(92, 92) holds x, y in {76, 84}, but e.g. (76, 76)
    # has max(l, t, r, b) = 84 > 64. p5 (stride 32): square (32, 32)-(128, 128) holds x, y in
    # {48, 80, 112}, all with max <= 112 < 128. p4 (stride 16): square (56, 56)-(104, 104) holds
    # x, y in {72, 88}, with max in {88} within [64, 128]: exactly these four are positive.
    assert (out["strides"][pos] == 16).all()
    assert {tuple(p) for p in out["points"][pos].tolist()} == {
        (72.0, 72.0), (88.0, 72.0), (72.0, 88.0), (88.0, 88.0)
    }
    assert (cls_t[pos] == 1).all()
    i = pos[0]  # (72, 72)
    assert reg_t[i].tolist() == [72.0, 72.0, 88.0, 88.0]
    assert ctr_t[i].item() == pytest.approx(72 / 88)
    assert ctr_t[pos].tolist() == pytest.approx([72 / 88] * 4)


def test_assign_ambiguity_takes_smallest_box() -> None:
    head = make_head(in_features=("p3",), center_sampling_radius=0.0)
    points = FCOSHead.level_points(8, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 40.0, 40.0]])
    cls_t, reg_t, _ = head.assign_targets(points, torch.full((64,), 8.0), [64], boxes,
                                          torch.tensor([0, 1]))
    grid = cls_t.reshape(8, 8)
    assert (grid[2:5, 2:5] == 1).all()  # x, y in {20, 28, 36}: inside both, small box wins
    assert grid[0, 0] == 0 and grid[7, 7] == 0 and grid[1, 1] == 0
    assert reg_t.reshape(8, 8, 4)[2, 2].tolist() == [4.0, 4.0, 20.0, 20.0]
    assert reg_t.reshape(8, 8, 4)[0, 0].tolist() == [4.0, 4.0, 60.0, 60.0]
    # No boxes: everything is background.
    cls_t, reg_t, ctr_t = head.assign_targets(points, torch.full((64,), 8.0), [64],
                                              torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (cls_t == 3).all() and (reg_t == 0).all() and (ctr_t == 0).all()


# ---------------------------------------------------------------- loss


def batch_targets() -> list[dict[str, torch.Tensor]]:
    return [
        target([[4, 6, 40, 50], [30, 20, 90, 60]], [0, 2]),
        target([[10, 10, 60, 60]], [1]),
        target([[0, 0, 96, 64], [50, 5, 70, 25]], [1, 1]),
    ]


def reference_loss(head: FCOSHead, out: dict, targets: list, images: list[int]) -> dict:
    """Independent loss: the assigned targets fed straight to the torchvision losses."""
    cls_sum = box_num = box_den = ctr_sum = 0.0
    num_pos = 0
    for i in images:
        cls_t, reg_t, ctr_t = head.assign_targets(
            out["points"], out["strides"], out["level_sizes"], targets[i]["boxes"],
            targets[i]["labels"],
        )
        onehot = torch.zeros_like(out["cls"][i])
        for loc in (cls_t != head.num_classes).nonzero().reshape(-1).tolist():
            onehot[loc, cls_t[loc]] = 1.0
        cls_sum = cls_sum + sigmoid_focal_loss(out["cls"][i], onehot, 0.25, 2, "sum")
        pos = cls_t != head.num_classes
        num_pos += int(pos.sum())
        pts = out["points"][pos]
        tgt = decode_ltrb(pts, reg_t[pos])
        # The regression targets decode back to the matched ground-truth boxes.
        for b, lab in zip(tgt, cls_t[pos], strict=True):
            match = (targets[i]["boxes"] == b).all(1) & (targets[i]["labels"] == lab)
            assert match.any()
        giou = generalized_box_iou_loss(decode_ltrb(pts, out["box"][i][pos]), tgt)
        box_num = box_num + (giou * ctr_t[pos]).sum()
        box_den = box_den + ctr_t[pos].sum()
        ctr_sum = ctr_sum + F.binary_cross_entropy_with_logits(
            out["ctr"][i][pos], ctr_t[pos], reduction="sum"
        )
    assert num_pos > 0
    return {"cls": cls_sum / num_pos, "box": box_num / box_den, "ctr": ctr_sum / num_pos}


def test_loss_matches_torchvision_reference() -> None:
    head = make_head()
    out = head(det_features(3, 64, 96, seed=1), (64, 96))
    targets = batch_targets()
    present = torch.tensor([True, False, True])
    losses = head.loss(out, targets, present)
    ref = reference_loss(head, out, targets, [0, 2])
    assert set(losses) == {"cls", "box", "ctr"}
    for k in losses:
        assert losses[k].shape == ()
        assert losses[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k
    # The absent image's labels do not matter, nor does it being None.
    other = [targets[0], target([[1, 1, 90, 60]], [2]), targets[2]]
    assert head.loss(out, other, present)["cls"].item() == pytest.approx(losses["cls"].item())
    other[1] = None
    assert head.loss(out, other, present)["box"].item() == pytest.approx(losses["box"].item())
    # ...whereas an image that is present does.
    assert head.loss(out, targets, torch.tensor([True, True, True]))["cls"] != losses["cls"]


def test_loss_gradients_and_degenerate_cases() -> None:
    head = make_head()
    out = head(det_features(2, 64, 64, seed=2), (64, 64))
    losses = head.loss(out, [target([[8, 8, 56, 40]], [1]), target([], [])],
                       torch.tensor([True, True]))
    sum(losses.values()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    # No present image / no boxes: finite, zero where nothing is positive, still backward-able.
    head.zero_grad()
    out = head(det_features(2, 64, 64, seed=2), (64, 64))
    none = head.loss(out, [target([], []), target([], [])], torch.tensor([False, False]))
    assert all(v.item() == 0 for v in none.values())
    sum(none.values()).backward()
    out = head(det_features(2, 64, 64, seed=2), (64, 64))
    empty = head.loss(out, [target([], []), target([], [])], torch.tensor([True, False]))
    assert empty["box"].item() == 0 and empty["ctr"].item() == 0 and empty["cls"].item() > 0
    sum(empty.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


# ---------------------------------------------------------------- post-processing


def confident_outputs(head: FCOSHead, size: tuple[int, int]) -> dict:
    """Outputs with every location firmly background; tests switch chosen ones on."""
    out = {k: (v.detach().clone() if torch.is_tensor(v) else v)
           for k, v in head(det_features(2, *size), size).items()}
    out["cls"].fill_(-20.0)
    out["ctr"].fill_(20.0)
    out["box"].fill_(8.0)
    return out


def loc_of(out: dict, x: float, y: float, stride: int) -> int:
    m = (out["points"][:, 0] == x) & (out["points"][:, 1] == y) & (out["strides"] == stride)
    return int(m.nonzero())


def test_postprocess_decodes_one_location() -> None:
    head = make_head()
    out = confident_outputs(head, (64, 96))
    k = loc_of(out, 40.0, 24.0, 16)
    out["cls"][0, k, 1] = 5.0
    out["box"][0, k] = torch.tensor([10.0, 20.0, 30.0, 15.0])
    out["ctr"][0, k] = 0.5
    preds = head.postprocess(out, (64, 96))
    assert len(preds) == 2
    assert preds[0]["boxes"].tolist() == [[30.0, 4.0, 70.0, 39.0]]
    assert preds[0]["labels"].tolist() == [1]
    expected = math.sqrt(torch.sigmoid(torch.tensor(5.0)) * torch.sigmoid(torch.tensor(0.5)))
    assert preds[0]["scores"].item() == pytest.approx(expected)
    assert preds[1]["boxes"].shape == (0, 4)
    assert preds[1]["scores"].shape == (0,) and preds[1]["labels"].shape == (0,)
    assert preds[1]["labels"].dtype == torch.long


def test_postprocess_nms_clip_and_limits() -> None:
    head = make_head()
    out = confident_outputs(head, (64, 96))
    a, b, c = loc_of(out, 36.0, 28.0, 8), loc_of(out, 44.0, 28.0, 8), loc_of(out, 40.0, 24.0, 16)
    out["cls"][0, a, 2], out["box"][0, a] = 3.0, torch.tensor([16.0, 16.0, 16.0, 16.0])
    out["cls"][0, b, 2], out["box"][0, b] = 2.0, torch.tensor([23.0, 16.0, 9.0, 16.0])  # ~dup
    out["cls"][0, c, 0], out["box"][0, c] = 1.0, torch.tensor([20.0, 12.0, 12.0, 20.0])  # class 0
    # Near the corner with a box reaching out of the image: clipped to (0, 0)-(96, 64).
    d = loc_of(out, 84.0, 60.0, 8)
    out["cls"][0, d, 1], out["box"][0, d] = 0.0, torch.tensor([10.0, 10.0, 50.0, 50.0])
    preds = head.postprocess(out, (64, 96))[0]

    cand_boxes = torch.stack([decode_ltrb(out["points"][i], out["box"][0, i]) for i in (a, b, c)])
    cand_scores = torch.stack([
        (out["cls"][0, i, lab].sigmoid() * out["ctr"][0, i].sigmoid()).sqrt()
        for i, lab in ((a, 2), (b, 2), (c, 0))
    ])
    keep = batched_nms(cand_boxes, cand_scores, torch.tensor([2, 2, 0]), head.nms_thresh)
    assert keep.tolist() == [0, 2]  # the class-2 duplicate goes, the class-0 box stays
    assert preds["labels"].tolist() == [2, 0, 1]
    assert torch.allclose(preds["boxes"][:2], cand_boxes[keep])
    assert torch.allclose(preds["scores"][:2], cand_scores[keep])
    assert preds["boxes"][2].tolist() == [74.0, 50.0, 96.0, 64.0]
    assert (preds["scores"][:-1] >= preds["scores"][1:]).all()

    head.max_detections = 2
    assert len(head.postprocess(out, (64, 96))[0]["boxes"]) == 2
    head.score_thresh = 0.9  # only sqrt(sigmoid(3)) ~ 0.976 and sqrt(sigmoid(2)) ~ 0.94 pass
    head.nms_thresh = 1.0
    assert head.postprocess(out, (64, 96))[0]["labels"].tolist() == [2, 2]
    head.topk_candidates = 1  # per level: one from p3
    assert len(head.postprocess(out, (64, 96))[0]["boxes"]) == 1


# ---------------------------------------------------------------- overfit


def test_overfit_fixed_input() -> None:
    head = make_head(num_convs=1)
    feats = det_features(2, 64, 64, seed=3)
    targets = [target([[8, 8, 40, 48]], [0]), target([[20, 4, 60, 30], [0, 30, 30, 62]], [1, 2])]
    present = torch.tensor([True, True])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = head.loss(head(feats, (64, 64)), targets, present)
        total = sum(losses.values())
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        total.backward()
        opt.step()
    last = {k: v.item() for k, v in head.loss(head(feats, (64, 64)), targets, present).items()}
    assert sum(last.values()) < 0.5 * sum(first.values()), (first, last)
    assert last["box"] < first["box"] and last["cls"] < first["cls"]
