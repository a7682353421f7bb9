"""run_kernel_benchmark and tools/benchmark.py on the CPU with quick shapes: JSON, bytes, fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mtvision import kernels
from mtvision.benchmarks.kernels import CASES, format_table, prepare_case, run_kernel_benchmark
from mtvision.registry import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tools/
from tools.benchmark import main  # noqa: E402

# Small time budgets: the test checks the plumbing, not the speed.
FAST = {"warmup_ms": 1.0, "rep_ms": 5.0}
TRITON_FIELDS = ("triton_ms", "triton_gbps", "triton_peak_mib", "speedup")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "sub" / "kernels.json"
    return run_kernel_benchmark(quick=True, device="cpu", out=out, **FAST), out


def _case(results: dict, name: str) -> dict:
    return next(c for c in results["cases"] if c["name"] == name)


def test_json_written_and_equal_to_the_result(quick_run):
    res, out = quick_run
    assert json.loads(out.read_text()) == res
    assert [p.name for p in out.parent.iterdir()] == ["kernels.json"]  # no temp file left
    assert res["device_type"] == "cpu" and res["quick"] is True
    assert res["torch"] and res["triton"]


def test_every_case_present(quick_run):
    res, _ = quick_run
    assert CASES == ("seg_ce_fp32", "seg_ce_bf16", "seg_ce_wide_fp32", "seg_ce_wide_bf16",
                     "edge_bce", "focal", "dense_losses")
    assert [c["name"] for c in res["cases"]] == list(CASES)


def test_minimal_bytes_by_hand(quick_run):
    res, _ = quick_run
    n, c, h, w = 2, 5, 32, 32
    fp32, bf16, int64 = 4, 2, 8
    ce = _case(res, "seg_ce_fp32")
    assert ce["shape"] == {"logits": [n, c, h, w], "target": [n, h, w]}
    # read logits + write their gradient + read int64 targets + one float32 loss
    assert ce["bytes"] == 2 * n * c * h * w * fp32 + n * h * w * int64 + 4 == 98308
    assert _case(res, "seg_ce_bf16")["bytes"] == 2 * n * c * h * w * bf16 + n * h * w * int64 + 4
    k = 6
    dense = _case(res, "dense_losses")
    assert dense["shape"]["edge_logits"] == [n, k, h, w]
    assert dense["bytes"] == (2 * n * (c + k) * h * w * fp32 + 2 * n * h * w * int64
                              + 4 * (1 + k))


def test_cpu_times_positive_and_triton_fields_null(quick_run):
    res, _ = quick_run
    for case in res["cases"]:
        assert case["torch_ms"] > 0 and case["torch_gbps"] > 0, case["name"]
        assert case["torch_peak_mib"] is None
        for field in TRITON_FIELDS:
            assert case[field] is None, (case["name"], field)
    assert "CUDA" in res["note"]
    table = format_table(res)
    assert res["note"] in table and all(name in table for name in CASES)


@pytest.mark.skipif(not kernels.INTERPRET, reason="needs TRITON_INTERPRET=1 (tests/conftest.py)")
@pytest.mark.parametrize("name", CASES)
def test_fused_and_plain_compute_the_same_gradients(name):
    # What the CUDA timings compare must be one computation: checked on the CPU through
    # Triton's interpreter with the quick shapes.
    case = prepare_case(name, quick=True, device="cpu")
    fused, plain = case.fused(), case.plain()
    assert len(fused) == len(plain) >= 1
    for f, p in zip(fused, plain, strict=True):
        assert f.dtype == p.dtype and f.shape == p.shape
        torch.testing.assert_close(f.float(), p.float(), rtol=1e-3, atol=1e-5)


def test_unknown_case_is_a_config_error():
    with pytest.raises(ConfigError, match="seg_ce_fp32"):
        run_kernel_benchmark(cases=["seg_ce_fp33"], device="cpu", quick=True)


def test_tool_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    rc = main(["kernels", "--quick", "--device", "cpu", "--out", str(out),
               "--warmup", "1", "--rep", "5"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "torch ms" in stdout and "triton GB/s" in stdout
    assert all(name in stdout for name in CASES)
    assert "need a CUDA device" in stdout
    assert f"results: {out}" in stdout
    assert [c["name"] for c in json.loads(out.read_text())["cases"]] == list(CASES)


def test_tool_error_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert main(["kernels", "--quick", "--device", "bogus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not out.exists()
