"""The multi-task model: backbone -> neck -> a dict of task heads, the tasks sharing the
encoder as ``model.sharing`` says (hard by default; see ``mtvision.models.sharing``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtvision.kernels import dense_losses
from mtvision.models.heads.base import DenseLoss, FeatureInfo, TaskHead
from mtvision.models.sharing import HardSharing, Sharing, SharingParts
from mtvision.registry import BACKBONES, HEADS, NECKS, SHARING, ConfigError


class MultiTaskModel(nn.Module):
    """A backbone and neck feeding any subset of task heads, shared as ``sharing`` says.

    ``forward`` returns the raw outputs of every head; ``losses`` and ``postprocess`` delegate
    to each head. ``extract`` and ``forward_heads`` split the two halves so a gradient balancer
    can differentiate with respect to the shared features.

    ``sharing`` (default: hard sharing) decides how images reach the heads: with per-task
    encoders (soft, cross-stitch) ``backbone`` and ``neck`` are ``nn.ModuleDict``s of one copy
    per task. ``regularization`` is the architecture's penalty for the training loss.
    ``aux_tasks`` are trained like the others but left out of the headline scores.

    ``loss_backend`` (``auto``, ``triton``, ``torch``) selects the loss kernels of every head;
    with ``fuse_dense_losses`` a cross-entropy head and an edge head on one grid (seg and edge)
    are scored by a single kernel launch (``kernels.dense_losses``), with the same values.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None,
                 heads: dict[str, TaskHead], loss_backend: str = "auto",
                 fuse_dense_losses: bool = True, sharing: Sharing | None = None,
                 aux_tasks: Sequence[str] = ()) -> None:
        super().__init__()
        if not heads:
            raise ConfigError("model.heads is empty: a model needs at least one task head")
        if loss_backend not in ("auto", "triton", "torch"):
            raise ConfigError(f"model.loss_backend must be auto, triton or torch, got "
                              f"{loss_backend!r}")
        unknown = [t for t in aux_tasks if t not in heads]
        if unknown:
            raise ConfigError(f"model.aux_tasks: {', '.join(map(str, unknown))} not among the "
                              f"model's heads ({', '.join(heads)})")
        if aux_tasks and all(t in aux_tasks for t in heads):
            raise ConfigError("model.aux_tasks lists every head: at least one task must be a "
                              "main task")
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads)
        # Hard sharing has no parameters: its checkpoints keep the names they always had.
        self.sharing = sharing if sharing is not None else HardSharing(
            SharingParts(backbone, neck, heads))
        self.aux_tasks = list(aux_tasks)
        self.loss_backend = loss_backend
        self.fuse_dense_losses = fuse_dense_losses
        for head in heads.values():
            head.loss_backend = loss_backend

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def main_tasks(self) -> list[str]:
        """The tasks that count in the headline scores (all but ``aux_tasks``)."""
        return [t for t in self.heads if t not in self.aux_tasks]

    @property
    def max_stride(self) -> int:
        """The coarsest feature stride: input sides must be multiples of it, or the levels of
        the feature pyramid stop lining up."""
        strides = [info.stride for m in self.modules()
                   for info in (getattr(m, "feature_info", None) or {}).values()
                   if hasattr(info, "stride")]
        return int(max(strides, default=1))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters shared by the tasks (hard sharing: backbone and neck)."""
        return self.sharing.shared_parameters(self.backbone, self.neck)

    def head_inputs(self) -> list[str]:
        """The shared feature names some head reads (its ``in_features``; all when a head does
        not say), in a fixed order: the cut of feature-mode gradient balancing. A
        ``ConfigError`` for per-task encoders, which share no features."""
        return self.sharing.head_inputs(self.backbone, self.neck)

    def regularization(self) -> Tensor | None:
        """The sharing architecture's penalty (soft sharing's L2 tie), added once per step to
        the training loss, or None."""
        return self.sharing.regularization(self.backbone, self.neck)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimizer must not decay (beyond norms and biases): those
        every part with a ``no_weight_decay()`` names (cross-stitch units, a ViT's position
        embeddings in each backbone copy...)."""
        return {f"{prefix}.{n}" for prefix, m in self.named_modules()
                if prefix and callable(getattr(m, "no_weight_decay", None))
                for n in m.no_weight_decay()}

    def extract(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        """The encoder features (per-task encoders: named ``task/name``)."""
        return self.sharing.extract(self.backbone, self.neck, images, tasks)

    def forward_heads(self, features: dict[str, Tensor], image_size: tuple[int, int],
                      tasks: list[str] | None = None) -> dict[str, Any]:
        return {t: self.heads[t](self.sharing.task_features(features, t), image_size)
                for t in (tasks or self.task_names)}

    def forward(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, Any]:
        image_size = (images.shape[-2], images.shape[-1])
        return self.forward_heads(self.extract(images, tasks), image_size, tasks)

    def losses(self, outputs: dict[str, Any], targets: dict[str, Any],
               present: dict[str, Tensor], tasks: list[str] | None = None
               ) -> dict[str, dict[str, Tensor]]:
        """Per task, its named loss components: of ``tasks`` (every rank passes the same, so a
        loss's collectives match; a task no image here labels then gives a zero loss), or by
        default of the tasks some image of the batch labels (read from ``present``: on the
        host, as the trainer keeps it, that costs no device sync)."""
        if tasks is not None:
            tasks = [t for t in self.heads if t in tasks and t in outputs and t in present]
        else:
            tasks = [t for t in self.heads if t in outputs and t in present
                     and bool(present[t].any())]
        out = self._fused_dense(tasks, outputs, targets, present) if self.fuse_dense_losses else {}
        for task in tasks:
            if task not in out:
                out[task] = self.heads[task].loss(outputs[task], targets[task], present[task])
        return {t: out[t] for t in tasks}  # the model's task order, whichever path computed it

    def _fused_dense(self, tasks: list[str], outputs: dict[str, Any], targets: dict[str, Any],
                     present: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
        """The losses of one cross-entropy head and one edge head sharing a grid, from one
        ``dense_losses`` call; {} when the model has no such pair (the heads' own ``loss``
        then runs, so the kernel inputs are built only when they are fused)."""
        ce = [t for t in tasks if self.heads[t].dense_kind == "ce"]
        bce = [t for t in tasks if self.heads[t].dense_kind == "bce"]
        if not ce or not bce:
            return {}
        s: DenseLoss = self.heads[ce[0]].dense_loss(outputs[ce[0]], targets[ce[0]],
                                                    present[ce[0]])
        e: DenseLoss = self.heads[bce[0]].dense_loss(outputs[bce[0]], targets[bce[0]],
                                                     present[bce[0]])
        if s.target.shape != e.target.shape:
            return {}
        seg_loss, edge_loss = dense_losses(
            s.logits, s.target, e.logits, e.target,
            seg_weight=s.options.get("weight"), seg_ignore_index=s.ignore_index,
            label_smoothing=s.options.get("label_smoothing", 0.0),
            edge_ignore_index=e.ignore_index, edge_balanced=e.options.get("balanced", True),
            backend=self.loss_backend,
        )
        return {ce[0]: self.heads[ce[0]].loss_from_dense(seg_loss),
                bce[0]: self.heads[bce[0]].loss_from_dense(edge_loss)}

    def postprocess(self, outputs: dict[str, Any], image_size: tuple[int, int]) -> dict[str, list]:
        return {t: self.heads[t].postprocess(o, image_size) for t, o in outputs.items()}

    @torch.no_grad()
    def predict(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, list]:
        """Per task, one prediction per image, in input-image pixels."""
        was_training = self.training
        self.eval()
        try:
            outputs = self(images, tasks)
            return self.postprocess(outputs, (images.shape[-2], images.shape[-1]))
        finally:
            self.train(was_training)


def build_model(cfg: dict[str, Any]) -> MultiTaskModel:
    """Build from the ``model`` section: ``{"backbone": {...}, "neck": {...}, "heads": {...},
    "sharing": {...}, "aux_tasks": [...], "loss_backend": ..., "fuse_dense_losses": ...}``."""
    backbone = BACKBONES.build(cfg["backbone"], "model.backbone")
    info: dict[str, FeatureInfo] = dict(backbone.feature_info)
    neck = None
    if cfg.get("neck"):
        neck = NECKS.build(cfg["neck"], "model.neck", feature_info=info)
        info.update(neck.feature_info)
    heads = {}
    for task, head_cfg in cfg["heads"].items():
        head = HEADS.build(head_cfg, f"model.heads.{task}", feature_info=info)
        if head.task != task:
            raise ConfigError(
                f"model.heads.{task}: head '{head_cfg['name']}' is a '{head.task}' head; "
                f"put it under model.heads.{head.task}"
            )
        heads[task] = head
    parts = SharingParts(backbone, neck, heads, cfg["backbone"].get("name", ""))
    sharing: Sharing = SHARING.build(cfg.get("sharing") or {"name": "hard"}, "model.sharing",
                                     parts=parts)
    backbone, neck = sharing.encoders(parts)
    return MultiTaskModel(backbone, neck, heads, loss_backend=cfg.get("loss_backend", "auto"),
                          fuse_dense_losses=cfg.get("fuse_dense_losses", True),
                          sharing=sharing, aux_tasks=cfg.get("aux_tasks") or ())
