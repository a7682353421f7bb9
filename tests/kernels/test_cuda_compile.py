"""Every Triton kernel compiles for a Hopper GPU (sm_90) down to PTX, here without a GPU.

The interpreter tests check the arithmetic; this checks that the same source is also valid
for the real compiler (types of loop-carried values, constexpr branches, pointer casts), which
the interpreter does not enforce. The tests run with ``TRITON_INTERPRET=1``, under which the
kernels are interpreted functions, so the compilation runs in a child process without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton
from mtvision.kernels.jit.balanced_bce import edge_bce_kernel
from mtvision.kernels.jit.combine import combine_kernel
from mtvision.kernels.jit.cross_entropy import ce_kernel
from mtvision.kernels.jit.focal import focal_kernel
from mtvision.kernels.jit.gram import graddrop_kernel, gram_kernel, weighted_rows_kernel
from mtvision.kernels.jit.multi_head import dense_kernel
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parents[2]


def compile_ptx(kernel, types: dict[str, str], constexprs: dict[str, object]) -> str:
    names = kernel.arg_names
    signature = {n: ("constexpr" if n in constexprs else types[n]) for n in names}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]


# Gradients are stored in the logits' dtype, float32 for float16 logits (_common.grad_dtype).
CE = {"logits_ptr": "*bf16", "target_ptr": "*i64", "weight_ptr": "*fp32", "grad_ptr": "*bf16",
      "loss_ptr": "*fp32", "partial_ptr": "*fp32", "S": "i32", "C": "i32",
      "ignore_index": "i32", "one_minus_eps": "fp32", "eps_over_c": "fp32"}
GRAM = {"g_ptr": "*bf16", "partial_ptr": "*fp32", "T": "i32", "P": "i64", "stride_t": "i64",
        "chunks_per_program": "i32"}
ROWS = {"g_ptr": "*bf16", "w_ptr": "*fp32", "out_ptr": "*bf16", "T": "i32", "P": "i64",
        "stride_t": "i64", "stride_out": "i64"}
DROP = {"g_ptr": "*bf16", "u_ptr": "*fp32", "out_ptr": "*fp32", "T": "i32", "P": "i64",
        "stride_t": "i64", "eps": "fp32"}
EDGE = {"logits_ptr": "*fp16", "target_ptr": "*i64", "grad_ptr": "*fp32", "loss_ptr": "*fp32",
        "partial_ptr": "*fp32", "S": "i32", "K": "i32", "ignore_index": "i32"}


CASES = {
    "ce_single_tile": (ce_kernel, CE, dict(
        HAS_WEIGHT=True, SMOOTH=True, COMPUTE_GRAD=True, PER_PIXEL=False, SINGLE_TILE=True,
        BLOCK_C=32, BLOCK_P=128)),
    "ce_looped": (ce_kernel, CE, dict(
        HAS_WEIGHT=True, SMOOTH=True, COMPUTE_GRAD=True, PER_PIXEL=True, SINGLE_TILE=False,
        BLOCK_C=32, BLOCK_P=128)),
    "ce_eval": (ce_kernel, CE, dict(
        HAS_WEIGHT=False, SMOOTH=False, COMPUTE_GRAD=False, PER_PIXEL=True, SINGLE_TILE=True,
        BLOCK_C=1, BLOCK_P=1024)),
    "edge": (edge_bce_kernel, EDGE, dict(COMPUTE_GRAD=True, PER_PIXEL=True, BLOCK_P=1024)),
    "edge_eval": (edge_bce_kernel, EDGE, dict(COMPUTE_GRAD=False, PER_PIXEL=False,
                                               BLOCK_P=1024)),
    "focal": (focal_kernel, {"x_ptr": "*bf16", "t_ptr": "*bf16", "grad_ptr": "*bf16",
                              "loss_ptr": "*fp32", "partial_ptr": "*fp32", "M": "i32",
                              "alpha": "fp32", "gamma": "fp32"},
              dict(USE_ALPHA=True, COMPUTE_GRAD=True, PER_ELEMENT=False, BLOCK=1024)),
    "seg_edge": (dense_kernel, {
        "seg_ptr": "*fp16", "seg_t_ptr": "*i64", "weight_ptr": "*fp32", "seg_grad_ptr": "*fp32",
        "seg_partial_ptr": "*fp32", "edge_ptr": "*fp16", "edge_t_ptr": "*i64",
        "edge_grad_ptr": "*fp32", "edge_partial_ptr": "*fp32", "S": "i32", "C": "i32",
        "K": "i32", "seg_ignore": "i32", "edge_ignore": "i32", "one_minus_eps": "fp32",
        "eps_over_c": "fp32"}, dict(
        HAS_SEG=True, HAS_EDGE=True, HAS_WEIGHT=False, SMOOTH=False, SEG_GRAD=True,
        EDGE_GRAD=True, SINGLE_TILE=True, BLOCK_C=32, BLOCK_P=128)),
    "seg_only_looped": (dense_kernel, {
        "seg_ptr": "*fp32", "seg_t_ptr": "*i64", "weight_ptr": "*fp32", "seg_grad_ptr": "*fp32",
        "seg_partial_ptr": "*fp32", "edge_ptr": "*fp32", "edge_t_ptr": "*fp32",
        "edge_grad_ptr": "*fp32", "edge_partial_ptr": "*fp32", "S": "i32", "C": "i32",
        "K": "i32", "seg_ignore": "i32", "edge_ignore": "i32", "one_minus_eps": "fp32",
        "eps_over_c": "fp32"}, dict(
        HAS_SEG=True, HAS_EDGE=False, HAS_WEIGHT=True, SMOOTH=True, SEG_GRAD=True,
        EDGE_GRAD=False, SINGLE_TILE=False, BLOCK_C=32, BLOCK_P=128)),
    "combine": (combine_kernel, {"l_ptr": "*fp32", "w_ptr": "*fp32", "s_ptr": "*fp32",
                                  "out_ptr": "*fp32", "dl_ptr": "*fp32", "ds_ptr": "*fp32",
                                  "T": "i32"}, dict(HAS_W=True, UNCERTAINTY=True, BLOCK=4)),
    "gram_bf16": (gram_kernel, GRAM, dict(UPCAST=False, PRECISION="ieee", T_PAD=16,
                                           BLOCK_P=256)),
    "gram_fp32": (gram_kernel, {**GRAM, "g_ptr": "*fp32"}, dict(
        UPCAST=False, PRECISION="ieee", T_PAD=16, BLOCK_P=256)),
    "weighted_rows_bf16": (weighted_rows_kernel, ROWS, dict(BLOCK_T=16, BLOCK_P=256)),
    "weighted_rows_fp32": (weighted_rows_kernel, {**ROWS, "g_ptr": "*fp32", "out_ptr": "*fp32"},
                           dict(BLOCK_T=4, BLOCK_P=1024)),
    "graddrop_bf16": (graddrop_kernel, DROP, dict(BLOCK_T=16, BLOCK_P=256)),
    "graddrop_fp32": (graddrop_kernel, {**DROP, "g_ptr": "*fp32"}, dict(BLOCK_T=4,
                                                                         BLOCK_P=1024)),
}


def compile_all() -> dict[str, str]:
    """Case -> "ok" or the compiler's error."""
    out = {}
    for name, (kernel, types, constexprs) in CASES.items():
        try:
            ptx = compile_ptx(kernel, types, constexprs)
            ok = ".target sm_90" in ptx and ".entry" in ptx
            out[name] = "ok" if ok else "no sm_90 entry in the PTX"
        except Exception as e:  # noqa: BLE001 - reported to the parent test
            out[name] = f"{type(e).__name__}: {str(e)[:2000]}"
    return out


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.kernels.test_cuda_compile"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_compiles_for_sm90(case, compiled):
    assert compiled[case] == "ok"


if __name__ == "__main__":
    print(json.dumps(compile_all()))
