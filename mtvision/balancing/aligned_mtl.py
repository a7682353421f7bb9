"""Aligned-MTL: D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin, "Independent Component
Alignment for Multi-Task Learning", CVPR 2023.

The task gradients are aligned into an orthogonal system of equal norms: with the
eigendecomposition ``G G^T = V diag(lambda) V^T``::

    B = sqrt(lambda_ref) V diag(lambda)^-1/2 V^T,      w = B w0,      update = w^T G

(``G^T B`` are the aligned gradients, ``w0`` the pre-weights, ones by default: their sum.)
As in the authors' ``ProcrustesSolver``: eigenvalues at or below ``max(lambda) * T * eps``
(float32 eps) are dropped (their directions get weight 0, so a zero gradient gets weight 0),
and ``lambda_ref`` is the smallest kept eigenvalue (``scale_mode: "min"``, their default), the
lower median of the kept ones (``"median"``) or their mean (``"rmse"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS, ConfigError

SCALE_MODES = ("min", "median", "rmse")


@register_aggregator("aligned_mtl")
def aligned_mtl_weights(gram: Tensor, pre_weights: Tensor | None = None,
                        scale_mode: str = "min") -> Tensor:
    """Aligned-MTL's weights float32[T] from the Gram matrix ``G G^T`` and the pre-weights
    ``w0`` [T] (ones when None)."""
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got "
                         f"{scale_mode!r}")
    M = gram.detach().to(torch.float64)
    M = (M + M.T) / 2
    T = M.shape[0]
    lam, V = torch.linalg.eigh(M)  # ascending
    keep = lam > lam.max() * T * torch.finfo(torch.float32).eps
    n_keep = keep.sum()
    zero = torch.zeros((), dtype=M.dtype, device=M.device)
    if scale_mode == "min":
        ref = torch.where(keep, lam, math.inf).min()
    elif scale_mode == "median":
        # The kept eigenvalues are the top n_keep of the ascending list; torch.median (the
        # authors' choice) takes the lower median of them.
        idx = (T - n_keep + (n_keep - 1).clamp_min(0) // 2).clamp(0, T - 1)
        ref = lam.gather(0, idx.reshape(1))[0]
    else:
        ref = (lam * keep).sum() / n_keep.clamp_min(1)
    ref = torch.where(n_keep > 0, ref, zero)
    inv_sqrt = torch.where(keep, lam.clamp_min(1e-300).rsqrt(), zero)
    B = ref.sqrt() * (V * inv_sqrt[None, :]) @ V.T
    w0 = (torch.ones(T, dtype=M.dtype, device=M.device) if pre_weights is None
          else pre_weights.detach().to(M.dtype))
    return (B @ w0).float()


@BALANCERS.register("aligned_mtl")
class AlignedMTL(GradientBalancer):
    """Aligned-MTL (see the module docstring). Options: ``scale_mode`` ("min", "median",
    "rmse"); ``pre_weights`` (task -> w0_i, missing tasks 1)."""

    def __init__(self, tasks: Sequence[str], mode: str = "param", scale_mode: str = "min",
                 pre_weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks, mode)
        if scale_mode not in SCALE_MODES:
            raise ConfigError(f"balancer.scale_mode must be one of {', '.join(SCALE_MODES)}, "
                              f"got {scale_mode!r}")
        pre_weights = dict(pre_weights or {})
        for t, v in pre_weights.items():
            if t not in self.tasks:
                raise ConfigError(f"balancer.pre_weights names task '{t}', which the model does "
                                  f"not have (tasks: {', '.join(self.tasks)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"balancer.pre_weights.{t} must be a finite number, got {v!r}")
        self.scale_mode = scale_mode
        # From the config, not the checkpoint: not persistent.
        self.register_buffer("pre_weights", torch.tensor(
            [float(pre_weights.get(t, 1.0)) for t in self.tasks]), persistent=False)

    def task_weights(self, gram: Tensor, losses: Tensor) -> Tensor:
        rows = self.task_rows(gram.shape[0])
        return aligned_mtl_weights(gram, self.gather(self.pre_weights, rows), self.scale_mode)
