"""One host round trip of a method's small ``T x T`` problem.

The iterative solvers (MGDA, CAGrad, UPGrad, Nash-MTL, GradVac) and the eigendecomposition of
Aligned-MTL stop when their answer is reached, which needs a look at the numbers: as device
tensors that is a long chain of tiny kernels (thousands of launches per step on a GPU) or a
sync per decision. Instead the Gram matrix (with the few vectors the method needs: a few
hundred bytes) is copied to the host ONCE (on a GPU: the one sync of the solve), the problem is
solved there in float64 with NumPy/SciPy (microseconds, no kernel launch), and the weights
are copied back without waiting (``non_blocking``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def fetch(gram: Tensor, *vectors: Tensor) -> tuple[np.ndarray, ...]:
    """``gram`` (symmetrised) and each vector ``[T]``, as float64 NumPy arrays, in ONE
    device-to-host copy (the sync of the solve on a GPU)."""
    T = gram.shape[0]
    parts = [gram.detach().reshape(T, T), *(v.detach().reshape(T, 1) for v in vectors)]
    buf = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    # The one sync: the host needs the numbers to decide when the solve is done.
    host = buf.to("cpu", torch.float64).numpy()
    M = host[:, :T]
    out = [(M + M.T) / 2]
    out += [host[:, T + k].copy() for k in range(len(vectors))]
    return tuple(out)


def upload(values: np.ndarray, like: Tensor, dtype: type = np.float32) -> Tensor:
    """``values`` as a tensor of NumPy ``dtype`` on ``like``'s device (an asynchronous copy:
    the host already waited for the device in ``fetch``)."""
    host = torch.from_numpy(np.ascontiguousarray(values, dtype=dtype))
    return host.to(like.device, non_blocking=True)
