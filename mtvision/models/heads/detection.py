"""FCOS: anchor-free one-stage detection (Tian et al., "FCOS: Fully Convolutional One-Stage
Object Detection", ICCV 2019), with the later improvements the paper's code adopted: centerness
on the regression branch, center sampling, GIoU box loss and regression normalised by stride.

Every feature location (x, y) of a level with stride s predicts C class logits, the distances
(l, t, r, b) from (x, y) to the four sides of a box and a centerness logit. A location is
positive for a ground-truth box when it lies inside the box (inside a ``radius * s`` square
around the box centre with center sampling) and max(l, t, r, b) falls in the level's size
range; among several such boxes the smallest one wins. Centerness target (paper eq. 3):
``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    batched_nms,
    clip_boxes_to_image,
    generalized_box_iou_loss,
)

from mtvision.collectives import all_reduce_mean_
from mtvision.kernels import sigmoid_focal_loss
from mtvision.models.heads.base import (
    FeatureInfo,
    TaskHead,
    check_in_features,
    group_norm,
    select_features,
)
from mtvision.registry import HEADS, ConfigError

# exp() of a larger regression value would overflow in half precision and means a box of
# thousands of strides anyway; clamping keeps early, unstable training from producing inf.
_MAX_LOG_DISTANCE = 8.0


def default_size_ranges(strides: Sequence[int]) -> list[tuple[float, float]]:
    """FCOS's per-level object size ranges, scaled to the levels used.

    FCOS bounds P3..P7 (strides 8..128) by 64, 128, 256, 512, i.e. 8 x stride; the finest level
    starts at 0 and the coarsest is open-ended. Strides 8, 16, 32 give [0, 64], [64, 128],
    [128, inf].
    """
    bounds = [8.0 * s for s in strides[:-1]]
    lows = [0.0, *bounds]
    highs = [*bounds, math.inf]
    return list(zip(lows, highs, strict=True))


def decode_ltrb(points: Tensor, ltrb: Tensor) -> Tensor:
    """Distances (l, t, r, b) from points (x, y) -> boxes (x0, y0, x1, y1)."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def location_scores(cls: Tensor, ctr: Tensor) -> Tensor:
    """Detection scores [..., C] from class logits [..., C] and centerness logits [...]:
    ``sqrt(sigmoid(cls) * sigmoid(ctr))``; centerness down-weights off-centre locations."""
    return torch.sqrt(cls.sigmoid() * ctr[..., None].sigmoid())


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS eq. 3: sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp_min(1e-6)) * (
        tb.min(-1).values / tb.max(-1).values.clamp_min(1e-6)
    )
    return ratio.clamp_min(0).sqrt()


@HEADS.register("fcos")
class FCOSHead(TaskHead):
    """FCOS detection head shared across the levels in ``in_features``.

    ``forward`` returns a dict with the levels flattened and concatenated (N locations in all)::

        {"cls": float[B, N, C] logits, "box": float[B, N, 4] (l, t, r, b) distances in pixels,
         "ctr": float[B, N] centerness logits, "points": float[N, 2] (x, y) location centres,
         "strides": float[N], "level_sizes": list[int] (locations per level)}

    Loss components: ``cls`` (sigmoid focal loss / num_pos), ``box`` (GIoU loss weighted by the
    centerness targets) and ``ctr`` (BCE of centerness / num_pos).
    """

    task = "det"

    def __init__(
        self,
        feature_info: dict[str, FeatureInfo],
        num_classes: int,
        in_features: Sequence[str] = ("p3", "p4", "p5"),
        num_convs: int = 2,
        size_ranges: Sequence[Sequence[float]] | None = None,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        topk_candidates: int = 1000,
        max_detections: int = 100,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        check_in_features(feature_info, self.in_features, "fcos")
        if num_classes < 1:
            raise ConfigError(f"head 'fcos': num_classes must be >= 1, got {num_classes}")
        if not self.in_features:
            raise ConfigError("head 'fcos': in_features is empty")
        channels = {feature_info[n].channels for n in self.in_features}
        if len(channels) != 1:
            raise ConfigError(
                f"head 'fcos' shares its convolutions across levels, so in_features "
                f"{self.in_features} need equal channels; got {sorted(channels)}"
            )
        self.strides = [feature_info[n].stride for n in self.in_features]
        if self.strides != sorted(self.strides):
            raise ConfigError(
                f"head 'fcos': in_features must go from fine to coarse; strides {self.strides}"
            )
        if size_ranges is None:
            ranges = default_size_ranges(self.strides)
        else:
            ranges = [(float(lo), float(hi)) for lo, hi in size_ranges]
            if len(ranges) != len(self.in_features):
                raise ConfigError(
                    f"head 'fcos': size_ranges has {len(ranges)} entries for "
                    f"{len(self.in_features)} in_features"
                )
        if not 0 < prior_prob < 1:
            raise ConfigError(f"head 'fcos': prior_prob must be in (0, 1), got {prior_prob}")
        self.size_ranges = ranges
        self.num_classes = num_classes
        self.center_sampling_radius = float(center_sampling_radius)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.topk_candidates = int(topk_candidates)
        self.max_detections = int(max_detections)

        ch = channels.pop()

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(ch, ch, 3, padding=1), group_norm(ch), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.cls_tower = tower()
        self.box_tower = tower()
        self.cls_logits = nn.Conv2d(ch, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(ch, 4, 3, padding=1)
        self.ctr_pred = nn.Conv2d(ch, 1, 3, padding=1)
        # One learnable scale per level (FCOS sec. 3.1): the shared regressor's output range
        # differs per level.
        self.scales = nn.Parameter(torch.ones(len(self.in_features)))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0.0)
        # RetinaNet prior: start every location at foreground probability prior_prob so the
        # many easy negatives do not swamp the first iterations.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    # ------------------------------------------------------------------ forward
    def forward(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> dict[str, Any]:
        """Per-location logits, ltrb distances (exp(scale * x) * stride) and centerness."""
        cls_all, box_all, ctr_all, pts_all, str_all, sizes = [], [], [], [], [], []
        for lvl, (x, stride) in enumerate(
            zip(select_features(features, self.in_features), self.strides, strict=True)
        ):
            b, _, h, w = x.shape
            ct, bt = self.cls_tower(x), self.box_tower(x)
            cls = self.cls_logits(ct).permute(0, 2, 3, 1).reshape(b, h * w, self.num_classes)
            reg = (self.box_pred(bt) * self.scales[lvl]).float()
            ltrb = torch.exp(reg.clamp(max=_MAX_LOG_DISTANCE)) * stride
            ctr = self.ctr_pred(bt).reshape(b, h * w)
            cls_all.append(cls)
            box_all.append(ltrb.permute(0, 2, 3, 1).reshape(b, h * w, 4))
            ctr_all.append(ctr)
            pts_all.append(self.level_points(h, w, stride, x.device))
            str_all.append(torch.full((h * w,), float(stride), device=x.device))
            sizes.append(h * w)
        return {
            "cls": torch.cat(cls_all, 1),
            "box": torch.cat(box_all, 1),
            "ctr": torch.cat(ctr_all, 1),
            "points": torch.cat(pts_all, 0),
            "strides": torch.cat(str_all, 0),
            "level_sizes": sizes,
        }

    @staticmethod
    def level_points(h: int, w: int, stride: int, device: torch.device | None = None) -> Tensor:
        """Input-pixel centres (x, y) of an h x w map, row-major: (s // 2 + j s, s // 2 + i s)."""
        ys = torch.arange(h, device=device, dtype=torch.float32) * stride + stride // 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * stride + stride // 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)

    # ------------------------------------------------------------------ targets
    def assign_targets(
        self,
        points: Tensor,
        strides: Tensor,
        level_sizes: Sequence[int],
        boxes: Tensor,
        labels: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Targets of one image for all N locations at once.

        Returns ``(labels long[N], ltrb float[N, 4], centerness float[N])``; background
        locations get label ``num_classes`` and zero ltrb / centerness.
        """
        n = points.shape[0]
        device = points.device
        boxes = boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = labels.to(device=device, dtype=torch.long).reshape(-1)
        if boxes.shape[0] == 0:
            return (
                torch.full((n,), self.num_classes, dtype=torch.long, device=device),
                torch.zeros(n, 4, device=device),
                torch.zeros(n, device=device),
            )
        x, y = points[:, 0, None], points[:, 1, None]  # [N, 1]
        x0, y0, x1, y1 = boxes.unbind(1)  # [K]
        ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # [N, K, 4]
        if self.center_sampling_radius > 0:
            # Center sampling: only locations near the box centre are positives; the sub-box
            # is clipped to the ground truth so small boxes keep only inside locations.
            rad = strides[:, None] * self.center_sampling_radius
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            sx0 = torch.maximum(cx - rad, x0)
            sy0 = torch.maximum(cy - rad, y0)
            sx1 = torch.minimum(cx + rad, x1)
            sy1 = torch.minimum(cy + rad, y1)
            inside = torch.stack([x - sx0, y - sy0, sx1 - x, sy1 - y], 2).min(2).values > 0
        else:
            inside = ltrb.min(2).values > 0
        # Each location's size range, filled on the device from Python numbers (a tensor built
        # from the list, or repeat counts on the device, would wait for a copy or a read).
        lo, hi = (torch.cat([torch.full((n_l,), r[k], device=device)
                             for r, n_l in zip(self.size_ranges, level_sizes, strict=True)])
                  for k in (0, 1))
        max_reg = ltrb.max(2).values
        in_range = (max_reg >= lo[:, None]) & (max_reg <= hi[:, None])
        area = ((x1 - x0) * (y1 - y0))[None].expand(n, -1)
        area = area.masked_fill(~(inside & in_range), math.inf)
        min_area, match = area.min(1)  # ambiguous locations take the smallest box
        pos = torch.isfinite(min_area)
        cls_t = torch.where(pos, labels[match], torch.full_like(match, self.num_classes))
        reg_t = ltrb[torch.arange(n, device=device), match] * pos[:, None]
        ctr_t = torch.where(pos, centerness_target(reg_t), torch.zeros_like(min_area))
        return cls_t, reg_t, ctr_t

    # ------------------------------------------------------------------ loss
    def loss(
        self, outputs: dict[str, Any], targets: list[dict[str, Tensor]], present: Tensor
    ) -> dict[str, Tensor]:
        """FCOS loss over the images with ``present`` True (see the class docstring)."""
        # The focal kernel reads low-precision logits itself; the rest is computed in float32.
        cls, box, ctr = outputs["cls"], outputs["box"].float(), outputs["ctr"].float()
        # The flags are on the host (see heads.base.presence_on): no device sync here.
        idx = torch.as_tensor(present).reshape(-1).nonzero().reshape(-1).tolist()
        if not idx:
            # The collective below still runs: every rank calls it once per loss.
            all_reduce_mean_(torch.zeros(2, device=box.device))
            zero = (cls.sum() + box.sum() + ctr.sum()) * 0.0
            return {"cls": zero, "box": zero, "ctr": zero}
        points, strides = outputs["points"], outputs["strides"]
        assigned = [
            self.assign_targets(
                points, strides, outputs["level_sizes"], targets[i]["boxes"], targets[i]["labels"]
            )
            for i in idx
        ]
        cls_t = torch.stack([a[0] for a in assigned])  # [P, N]
        reg_t = torch.stack([a[1] for a in assigned])  # [P, N, 4]
        ctr_t = torch.stack([a[2] for a in assigned])  # [P, N]
        if len(idx) < cls.shape[0]:
            sel = torch.as_tensor(idx).to(cls.device, non_blocking=True)
            cls, box, ctr = cls[sel], box[sel], ctr[sel]

        pos = cls_t != self.num_classes
        # As FCOS: the positives and the centerness-target sum averaged over the ranks (one
        # collective), the count clamped at 1; device tensors, so no host sync.
        norms = all_reduce_mean_(torch.stack([pos.sum().float(), ctr_t.sum()]))
        num_pos = norms[0].clamp_min(1.0)
        cls_logits = cls if cls.dtype in (torch.float16, torch.bfloat16) else cls.float()
        onehot = F.one_hot(cls_t, self.num_classes + 1)[..., : self.num_classes]
        onehot = onehot.to(cls_logits.dtype)
        loss_cls = sigmoid_focal_loss(cls_logits, onehot, alpha=0.25, gamma=2.0, reduction="sum",
                                      backend=self.loss_backend) / num_pos

        # Every location, weighted: the centerness target is 0 off the positives (no boolean
        # indexing, whose size the host would have to read). Predicted boxes always have a
        # positive size and a negative's target is a point, so GIoU stays finite there.
        pts = points[None].expand(len(idx), -1, -1)
        pred_boxes = decode_ltrb(pts, box)
        tgt_boxes = decode_ltrb(pts, reg_t)
        giou = generalized_box_iou_loss(pred_boxes, tgt_boxes, reduction="none")
        loss_box = (giou * ctr_t).sum() / norms[1].clamp_min(1e-6)
        bce = F.binary_cross_entropy_with_logits(ctr, ctr_t, reduction="none")
        loss_ctr = (bce * pos).sum() / num_pos
        return {"cls": loss_cls, "box": loss_box, "ctr": loss_ctr}

    # ------------------------------------------------------------------ inference
    def dense_predictions(
        self, outputs: dict[str, Any], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Every location's box and class scores before any selection: ``(boxes float[B, N, 4]
        xyxy clipped to the image, scores float[B, N, C])``, as ``postprocess`` computes them
        (for exported graphs, which leave thresholding and NMS to the user)."""
        cls, box, ctr = outputs["cls"].float(), outputs["box"].float(), outputs["ctr"].float()
        boxes = clip_boxes_to_image(decode_ltrb(outputs["points"][None], box), image_size)
        return boxes, location_scores(cls, ctr)

    @torch.no_grad()
    def postprocess(
        self, outputs: dict[str, Any], image_size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        """Score sqrt(sigmoid(cls) * sigmoid(ctr)), threshold, top-k per level, decode, clip,
        class-wise NMS, keep ``max_detections``."""
        cls, box, ctr = outputs["cls"].float(), outputs["box"].float(), outputs["ctr"].float()
        points = outputs["points"]
        results = []
        for b in range(cls.shape[0]):
            boxes_l, scores_l, labels_l = [], [], []
            start = 0
            for size in outputs["level_sizes"]:
                sl = slice(start, start + size)
                start += size
                scores = location_scores(cls[b, sl], ctr[b, sl]).reshape(-1)
                cand = (scores > self.score_thresh).nonzero().reshape(-1)
                k = min(self.topk_candidates, cand.numel())
                top, order = scores[cand].topk(k)
                cand = cand[order]
                loc = cand // self.num_classes
                boxes_l.append(decode_ltrb(points[sl][loc], box[b, sl][loc]))
                scores_l.append(top)
                labels_l.append(cand % self.num_classes)
            boxes = clip_boxes_to_image(torch.cat(boxes_l), image_size)
            scores, labels = torch.cat(scores_l), torch.cat(labels_l)
            # A box entirely outside the image collapses to zero size when clipped.
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
