"""run_balancing_benchmark and `tools/benchmark.py balancing` on the CPU with a tiny setup:
JSON, baseline ratio, one row per (method, mode), loss-based methods once, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mtvision.balancing  # noqa: F401 - registers the methods
from mtvision.balancing.gradient import GradientBalancer
from mtvision.benchmarks import balancing
from mtvision.benchmarks.balancing import (
    AIM,
    FEATURE_TARGET,
    GRAM_NOTE,
    PARAM_TARGET,
    format_table,
    method_kind,
    run_balancing_benchmark,
)
from mtvision.registry import BALANCERS, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tools/
from tools.benchmark import main  # noqa: E402

# The plumbing, not the speed: ResNet-18 at 64x64, batch 2, two rounds of one step.
TINY = {"batch": 2, "image_size": 64, "rounds": 2, "steps_per_round": 1, "warmup": 1,
        "device": "cpu"}
TEST_METHOD = "_test_equal_rows"


class _EqualRows(GradientBalancer):
    """Test double: a Gram-based method giving every task weight 1 (the fixed update)."""

    def task_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return torch.ones(gram.shape[0], device=gram.device)


@pytest.fixture(scope="module")
def gradient_method() -> Iterator[str]:
    """A registered gradient method, or a test-only one registered for this module."""
    registered = [n for n in BALANCERS.names() if method_kind(n)[0] == "gradient"]
    if registered:
        yield registered[0]
        return
    BALANCERS.register(TEST_METHOD)(_EqualRows)
    try:
        yield TEST_METHOD
    finally:
        BALANCERS.unregister(TEST_METHOD)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, gradient_method) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench") / "sub" / "balancing.json"
    res = run_balancing_benchmark(methods=["fixed", gradient_method], out=out, **TINY)
    return res, out, gradient_method


def test_json_written_and_equal_to_the_result(quick_run):
    res, out, _ = quick_run
    assert json.loads(out.read_text()) == res
    assert [p.name for p in out.parent.iterdir()] == ["balancing.json"]  # no temp file left
    assert res["benchmark"] == "balancing" and res["device_type"] == "cpu"
    assert res["torch"] and res["triton"] and res["python"]
    s = res["settings"]
    assert (s["batch"], s["image_size"], s["rounds"], s["steps_per_round"], s["warmup"]) == (
        2, 64, 2, 1, 1)
    assert s["backbones"] == ["resnet18"] and s["modes"] == ["param", "feature"]
    (model,) = res["models"]
    assert model["tasks"] == 4 and model["shared_params"] > 1_000_000
    assert model["resident"] is True and model["amp"] is None


def test_one_row_per_method_and_mode(quick_run):
    res, _, grad = quick_run
    got = sorted((r["method"], r["mode"] or "") for r in res["rows"])
    assert got == sorted([("fixed", ""), (grad, "param"), (grad, "feature")])
    for r in res["rows"]:
        assert r["backbone"] == "resnet18"
        assert r["steps"] == 2 and r["skipped"] == 0 and len(r["times_ms"]) == 2
        assert min(r["times_ms"]) <= r["median_ms"] <= max(r["times_ms"])
        assert r["median_ms"] > 0 and r["ratio"] > 0


def test_baseline_ratio_exactly_one_and_loss_based_mode_null(quick_run):
    res, _, _ = quick_run
    (fixed,) = [r for r in res["rows"] if r["method"] == "fixed"]
    assert fixed["ratio"] == 1.0
    assert fixed["mode"] is None and fixed["kind"] == "losses"
    assert fixed["target"] is None and fixed["ok"] is None
    for r in res["rows"]:
        assert r["ratio"] == pytest.approx(r["median_ms"] / fixed["median_ms"])


def test_targets_per_mode(quick_run):
    res, _, grad = quick_run
    rows = {r["mode"]: r for r in res["rows"] if r["method"] == grad}
    assert rows["param"]["target"] == PARAM_TARGET
    assert rows["param"]["ok"] == (rows["param"]["ratio"] <= PARAM_TARGET)
    if rows["feature"]["gram_based"]:
        assert rows["feature"]["target"] == FEATURE_TARGET
    else:
        assert rows["feature"]["target"] is None


def test_cpu_has_no_gram_timing_and_table(quick_run):
    res, _, grad = quick_run
    assert res["gram"] is None and res["note"] == GRAM_NOTE and "CUDA" in GRAM_NOTE
    table = format_table(res)
    assert AIM in table and GRAM_NOTE in table
    lines = table.splitlines()
    assert sum(grad in line for line in lines) == 2
    # Sorted by mode ("-" for loss-based first), then ratio.
    modes = [line.split()[2] for line in lines[3:6]]
    assert modes == ["-", "feature", "param"]


def test_test_double_is_gram_based():
    assert method_kind("fixed") == ("losses", False)
    BALANCERS.register("_test_kind")(_EqualRows)
    try:
        assert method_kind("_test_kind") == ("gradient", True)
    finally:
        BALANCERS.unregister("_test_kind")


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'fixed'"):
        run_balancing_benchmark(methods=["fixd"], device="cpu")
    with pytest.raises(ConfigError, match="did you mean 'param'"):
        run_balancing_benchmark(methods=["fixed"], modes=["parm"], device="cpu")
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        run_balancing_benchmark(methods=["fixed"], backbones=["resnet81"], device="cpu")
    with pytest.raises(ConfigError, match="multiple of 32"):
        run_balancing_benchmark(methods=["fixed"], image_size=100, device="cpu")
    with pytest.raises(ConfigError, match="is a directory"):
        run_balancing_benchmark(methods=["fixed"], device="cpu", out=tmp_path)


def test_tool_runs_and_reports_errors(tmp_path, capsys, monkeypatch):
    # No memory to spare: the path that rebuilds each configuration per round (resnet50 on a
    # small machine) runs instead of the one that keeps them all built.
    monkeypatch.setattr(balancing, "RESIDENT_SHARE", 0.0)
    out = tmp_path / "b.json"
    assert main(["balancing", "--methods", "fixed", "--batch", "2", "--image-size", "64",
                 "--rounds", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fixed" in printed and AIM in printed and str(out) in printed
    res = json.loads(out.read_text())
    assert [(r["method"], r["steps"]) for r in res["rows"]] == [("fixed", 2)]
    assert res["models"][0]["resident"] is False

    assert main(["balancing", "--methods", "fixed,fixd", "--device", "cpu",
                 "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'fixed'" in err
    assert not (tmp_path / "x.json").exists()
