"""Test-only reference: the solver of ``mtvision.balancing.aligned_mtl`` as it was before the
solvers moved to one host round trip / fewer launches (issue 15), kept verbatim to check that
the results did not change."""


from __future__ import annotations

import math

import torch
from torch import Tensor

SCALE_MODES = ("min", "median", "rmse")


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
