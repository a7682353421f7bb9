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


def fetch(gram: Tensor, *blocks: Tensor) -> tuple[np.ndarray, ...]:
    """``gram`` (symmetrised) and each block (``[T]`` or ``[T, k]``, any real dtype), as
    float64 NumPy arrays of their own shapes, in ONE device-to-host copy (on a GPU: the one
    sync of the solve)."""
    T = gram.shape[0]
    parts = [gram.detach().reshape(T, T), *(b.detach().reshape(T, -1) for b in blocks)]
    buf = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    # The one sync: the host needs the numbers to decide when the solve is done.
    host = buf.to("cpu", torch.float64).numpy()
    M = host[:, :T]
    out, off = [(M + M.T) / 2], T
    for b, part in zip(blocks, parts[1:], strict=True):
        k = part.shape[1]
        out.append(host[:, off:off + k].reshape(b.shape).copy())
        off += k
    return tuple(out)


def upload(values: np.ndarray, like: Tensor, dtype: type = np.float32) -> Tensor:
    """``values`` as a tensor of NumPy ``dtype`` on ``like``'s device (an asynchronous copy:
    the host already waited for the device in ``fetch``)."""
    host = torch.from_numpy(np.ascontiguousarray(values, dtype=dtype))
    return host.to(like.device, non_blocking=True)
