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

The eigendecomposition runs on the host (NumPy, float64) after ONE device-to-host copy of the
``T x T`` matrix (``host.fetch``): ``torch.linalg.eigh`` on a GPU reads its error code back
to the host anyway (a sync of its own), and the dozens of small launches around it go too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mtvision.balancing.functional import register_aggregator
from mtvision.balancing.gradient import GradientBalancer
from mtvision.balancing.host import fetch, upload
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
    if pre_weights is None:
        (M,) = fetch(gram)
        w0 = np.ones(M.shape[0])
    else:
        M, w0 = fetch(gram, pre_weights)
    T = M.shape[0]
    lam, V = np.linalg.eigh(M)  # ascending
    keep = lam > lam.max() * T * np.finfo(np.float32).eps
    n_keep = int(keep.sum())
    if n_keep == 0:
        return upload(np.zeros(T), gram)
    kept = lam[keep]  # the top n_keep eigenvalues, ascending
    if scale_mode == "min":
        ref = kept[0]
    elif scale_mode == "median":
        ref = kept[(n_keep - 1) // 2]  # the lower median, torch.median's (the authors' choice)
    else:
        ref = kept.mean()
    inv_sqrt = np.where(keep, 1 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
    B = math.sqrt(ref) * (V * inv_sqrt[None, :]) @ V.T
    return upload(B @ w0, gram)


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
