"""Kernels over the task-gradient matrix ``G`` (``T x P``: row i is the gradient of task i's
loss with respect to the shared parameters), for gradient balancing.

G is the largest tensor gradient balancing touches (P up to ~1e8, T up to ~16), so every
kernel here is bound by the bytes it moves and reads G exactly once, accumulating in float32
whatever G's dtype (float32, float16 or bfloat16; rows must be contiguous, a row stride is
allowed):

``gram(G)``
    ``S = G G^T`` (float32 ``[T, T]``), ``S_ik = sum_j G_ij G_kj``: the inner products that
    MGDA, PCGrad, CAGrad and friends need. Split-K over P: each program walks its contiguous
    share of the columns in ``[T_PAD, BLOCK_P]`` tiles, loads each tile once and accumulates
    ``tile @ tile^T`` (``tl.dot``, tensor cores for 16-bit G, IEEE float32 for float32 G) into
    a ``[T_PAD, T_PAD]`` float32 accumulator, then writes one partial ``T x T``. The partials
    (a few hundred KiB at most) are summed afterwards in a fixed order: deterministic, no
    atomics. Bytes moved: G once, plus the partials.
``weighted_rows(w, G, out=None)``
    ``r_j = sum_i w_i G_ij``: the combined gradient. Each program loads a ``[T, BLOCK_P]``
    tile, reduces it over the tasks in registers and stores ``BLOCK_P`` results straight into
    ``out`` in ``out``'s dtype (the trainer passes the flat ``.grad`` buffer of the shared
    parameters). Bytes moved: G once, ``out`` written once, nothing in between.
``graddrop(G, u=None, generator=None)``
    GradDrop (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient
    Sign Dropout", NeurIPS 2020). Per coordinate j::

        purity_j = 0.5 * (1 + sum_i G_ij / (sum_i |G_ij| + 1e-12))
        r_j = sum_i G_ij * [(u_j < purity_j and G_ij > 0) or (u_j > purity_j and G_ij < 0)]

    with ``u_j ~ U(0, 1)``. Both sums and the selection need every task's value of column j,
    so each program holds its ``[T, BLOCK_P]`` tile in registers: G is read once, ``u`` read
    once, ``r`` written once.

Random numbers of ``graddrop``: ``u`` is always a float32 tensor, either given or drawn with
``torch.rand(P, generator=generator, device=G.device)``, and the kernel reads it. Drawing
inside the kernel (``tl.rand``) would save writing and reading 4 bytes per coordinate, but the
CPU reference would then have to reproduce Triton's Philox stream; with a materialised ``u``
both backends give the same result for the same generator state, which is what makes the two
paths interchangeable and testable.
"""

from __future__ import annotations

import functools

import torch

from . import INTERPRET, resolve_backend
from ._common import cdiv, check_logits, jit_module, launch, next_pow2, pixel_block

# tl.dot needs every dimension >= 16 on the GPU: fewer tasks are padded with masked rows, which
# cost MMA work but no memory traffic.
MIN_DOT_DIM = 16
# About this many G elements in registers per program on the GPU.
TILE_ELEMENTS = 4096
# Split-K programs per SM for gram, and the fewest column chunks a program should walk so
# that writing its T x T partial stays small next to the G bytes it reads.
PROGRAMS_PER_SM = 4
MIN_CHUNKS_PER_PROGRAM = 4
# Split-K programs under the interpreter, where each one costs a Python round.
INTERPRET_PROGRAMS = 2
EPS = 1e-12


# ---------------------------------------------------------------- PyTorch references
def gram_reference(G: torch.Tensor) -> torch.Tensor:
    """``G.float() @ G.float().T``."""
    Gf = G.float()
    return Gf @ Gf.T


def weighted_rows_reference(w: torch.Tensor, G: torch.Tensor,
                            out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i w_i G_i`` in float32, written into ``out`` (and returned) when given."""
    w = w.to(device=G.device, dtype=torch.float32)
    if out is not None and out.dtype == torch.float32 and G.dtype == torch.float32 \
            and out.is_contiguous():
        torch.mm(w[None], G, out=out[None])  # straight into the gradient buffer: no temporary
        return out
    r = w @ G.float()
    return r if out is None else out.copy_(r)


def graddrop_reference(G: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """GradDrop of ``G`` with the uniform numbers ``u`` (float32 ``[P]``), in float32."""
    u = u.to(device=G.device, dtype=torch.float32)
    out = torch.empty(G.shape[1], device=G.device, dtype=torch.float32)
    # Column chunks keep each chunk's temporaries in cache on the CPU, where this is the path
    # that runs; one chunk on a GPU-sized budget is the whole matrix.
    chunk = 1 << 18 if G.device.type == "cpu" else max(G.shape[1], 1)
    for start in range(0, G.shape[1], chunk):
        Gf = G[:, start:start + chunk].float()
        uc = u[start:start + chunk]
        purity = 0.5 * (1.0 + Gf.sum(0) / (Gf.abs().sum(0) + EPS))
        # Where u < purity every positive component is kept and every negative one dropped,
        # and the other way round where u > purity: per coordinate the result is the sum of
        # the positive or of the negative parts, without T x P masks.
        pos = Gf.clamp(min=0.0).sum(0)
        neg = Gf.clamp(max=0.0).sum(0)
        torch.where(uc < purity, pos, torch.where(uc > purity, neg, torch.zeros_like(pos)),
                    out=out[start:start + chunk])
    return out


# ---------------------------------------------------------------- Triton launch
@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def gram_config(T: int, P: int, device: torch.device, block_p: int | None = None,
                programs: int | None = None, interpret: bool = INTERPRET
                ) -> tuple[int, int, int, int]:
    """(T_PAD, BLOCK_P, programs, chunks per program) of ``gram`` for a ``T x P`` matrix
    (P > 0). ``block_p`` / ``programs`` override the choice (tests use them to make programs
    walk several chunks)."""
    t_pad = max(MIN_DOT_DIM, next_pow2(T))
    if block_p is None:
        block_p = max(MIN_DOT_DIM, pixel_block(P, interpret, limit=TILE_ELEMENTS // t_pad))
    n_chunks = cdiv(P, block_p)
    if programs is None:
        if interpret or device.type != "cuda":
            target = INTERPRET_PROGRAMS
        else:
            index = device.index if device.index is not None else torch.cuda.current_device()
            target = PROGRAMS_PER_SM * _sm_count(index)
        programs = min(target, n_chunks // MIN_CHUNKS_PER_PROGRAM)
    per_program = cdiv(n_chunks, max(1, min(programs, n_chunks)))
    # Programs that would get no chunk are dropped, so that every partial is written. The
    # programs (the grid) are on axis 0.
    return t_pad, block_p, cdiv(n_chunks, per_program), per_program


def gram_launch(G: torch.Tensor, block_p: int | None = None,
                programs: int | None = None) -> torch.Tensor:
    """``G G^T`` of a ``[T, P]`` matrix (P > 0) with unit column stride."""
    T, P = G.shape
    t_pad, block_p, programs, per_program = gram_config(T, P, G.device, block_p, programs)
    partial = torch.empty((programs, T, T), device=G.device, dtype=torch.float32)
    launch(
        jit_module("gram").gram_kernel, (programs,), G,
        G, partial, T, P, G.stride(0), per_program,
        # The interpreter multiplies bfloat16 tiles as their raw uint16 bits: upcast there.
        UPCAST=INTERPRET and G.dtype == torch.bfloat16,
        PRECISION="ieee", T_PAD=t_pad, BLOCK_P=block_p,
    )
    return partial.sum(0)


def rows_config(T: int, P: int, interpret: bool = INTERPRET) -> tuple[int, int, tuple[int]]:
    """(BLOCK_T, BLOCK_P, grid) of the per-column kernels (``weighted_rows``, ``graddrop``)
    for a ``T x P`` matrix: one program per BLOCK_P columns, on grid axis 0."""
    block_t = next_pow2(T)
    block_p = pixel_block(P, interpret, limit=max(32, TILE_ELEMENTS // block_t))
    return block_t, block_p, (cdiv(P, block_p),)


# ---------------------------------------------------------------- public functions
def _check_matrix(G: torch.Tensor) -> torch.Tensor:
    """G as a [T, P] matrix with unit column stride (a copy only when it has none)."""
    if G.dim() != 2:
        raise ValueError(f"G must be a [T, P] matrix, got shape {tuple(G.shape)}")
    check_logits(G, "G")
    if G.shape[0] < 1:
        raise ValueError("G must have at least one row")
    return G if G.stride(1) == 1 or G.shape[1] <= 1 else G.contiguous()


def gram(G: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The Gram matrix ``G.float() @ G.float().T`` of the task gradients ``G`` (``[T, P]``):
    float32 ``[T, T]``, accumulated in float32 in one pass over G.

    ``backend``: ``"auto"`` (Triton for CUDA tensors), ``"triton"`` or ``"torch"``.
    """
    G = _check_matrix(G)
    if resolve_backend(backend, G) == "torch" or G.shape[1] == 0:
        return gram_reference(G)
    return gram_launch(G)


def weighted_rows(w: torch.Tensor, G: torch.Tensor, out: torch.Tensor | None = None,
                  backend: str = "auto") -> torch.Tensor:
    """``sum_i w_i G_i`` over the rows of ``G`` (``[T, P]``) with float32 weights ``w``
    (``[T]``), computed in float32 in one pass over G.

    Written into ``out`` when given (a 1-D tensor of P elements of any float dtype on G's
    device, e.g. the flat gradient buffer of the shared parameters) and returned; otherwise a
    new float32 tensor. ``out`` may be a row of G: each column is read before it is written.
    """
    G = _check_matrix(G)
    T, P = G.shape
    if w.shape != (T,):
        raise ValueError(f"w must have one weight per row of G ({T}), got shape "
                         f"{tuple(w.shape)}")
    if out is not None:
        if out.dim() != 1 or out.numel() != P:
            raise ValueError(f"out must be a 1-D tensor of {P} elements, got shape "
                             f"{tuple(out.shape)}")
        if not out.dtype.is_floating_point:
            raise TypeError(f"out must have a float dtype, got {out.dtype}")
        if out.device != G.device:
            raise ValueError(f"out is on {out.device}, G on {G.device}")
    if resolve_backend(backend, G) == "torch" or P == 0:
        return weighted_rows_reference(w, G, out)
    w = w.to(device=G.device, dtype=torch.float32).contiguous()
    if out is None:
        out = torch.empty(P, device=G.device, dtype=torch.float32)
    block_t, block_p, grid = rows_config(T, P)
    launch(
        jit_module("gram").weighted_rows_kernel, grid, G,
        G, w, out, T, P, G.stride(0), out.stride(0), BLOCK_T=block_t, BLOCK_P=block_p)
    return out


def graddrop(G: torch.Tensor, u: torch.Tensor | None = None,
             generator: torch.Generator | None = None, backend: str = "auto") -> torch.Tensor:
    """GradDrop of the task gradients ``G`` (``[T, P]``): float32 ``[P]`` (formula in the
    module docstring), in one pass over G.

    ``u``: the float32 ``[P]`` uniform numbers; when None they are drawn with
    ``torch.rand(P, generator=generator, device=G.device)``, so both backends give the same
    result for the same generator state.
    """
    G = _check_matrix(G)
    T, P = G.shape
    if u is None:
        u = torch.rand(P, generator=generator, device=G.device)
    elif u.shape != (P,):
        raise ValueError(f"u must have one number per column of G ({P}), got shape "
                         f"{tuple(u.shape)}")
    if resolve_backend(backend, G) == "torch" or P == 0:
        return graddrop_reference(G, u)
    u = u.to(device=G.device, dtype=torch.float32).contiguous()
    out = torch.empty(P, device=G.device, dtype=torch.float32)
    block_t, block_p, grid = rows_config(T, P)
    launch(
        jit_module("gram").graddrop_kernel, grid, G,
        G, u, out, T, P, G.stride(0), EPS, BLOCK_T=block_t, BLOCK_P=block_p)
    return out
