"""Triton kernel of ``kernels.combine`` (formula in that module's docstring)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def combine_kernel(l_ptr, w_ptr, s_ptr, out_ptr, dl_ptr, ds_ptr, T,
                    HAS_W: tl.constexpr, UNCERTAINTY: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < T
    L = tl.load(l_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        w = tl.where(mask, 1.0, 0.0)
    if UNCERTAINTY:
        s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        prec = 0.5 * tl.exp(-s)
        terms = w * (prec * L + 0.5 * s)
        tl.store(dl_ptr + offs, w * prec, mask=mask)
        tl.store(ds_ptr + offs, w * (0.5 - prec * L), mask=mask)
    else:
        terms = w * L
        tl.store(dl_ptr + offs, w, mask=mask)
    tl.store(out_ptr, tl.sum(tl.where(mask, terms, 0.0), 0))
