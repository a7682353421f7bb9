"""tools/benchmark.py train-step: phases of both contenders, the ratios, the JSON, errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from mtvision.benchmarks.train_step import PHASES, format_table, run_train_step_benchmark
from mtvision.registry import ConfigError
from tools.benchmark import main

SMALL = ["model.neck.channels=16", "model.heads.seg.channels=8"]


def test_phases_ratio_and_json(tmp_path: Path) -> None:
    out = tmp_path / "ts.json"
    res = run_train_step_benchmark(overrides=SMALL, batch=2, image_size=64, rounds=2,
                                   steps_per_round=1, warmup=0, device="cpu", out=out)
    c = res["contenders"]
    for name in ("trainer", "minimal"):
        assert set(c[name]["median_ms"]) == {*PHASES, "total"}
        assert len(c[name]["total_ms"]) == 2
        assert c[name]["median_ms"]["total"] == pytest.approx(
            statistics.median(c[name]["total_ms"]))
        # The timing wrappers caught every phase of both steps.
        for phase in ("data", "forward", "losses", "backward", "optimizer"):
            assert c[name]["median_ms"][phase] > 0, (name, phase)
    assert res["ratio"] == pytest.approx(c["trainer"]["median_ms"]["total"]
                                         / c["minimal"]["median_ms"]["total"])
    assert res["compute_ratio"] == pytest.approx(c["trainer"]["compute_ms"]
                                                 / c["minimal"]["compute_ms"])
    assert res["ok"] == (res["ratio"] <= res["target"])
    # Same weights, same batch, equal weighting: the first steps compute the same loss.
    first = res["first_loss"]
    assert first["trainer"] == pytest.approx(first["minimal"], rel=1e-5)
    assert json.loads(out.read_text())["contenders"] == json.loads(json.dumps(c))
    table = format_table(res)
    assert "trainer / minimal" in table and "optimizer" in table


def test_compiled_contender(tmp_path: Path) -> None:
    # aot_eager: graph capture and AOT autograd without inductor's C++ build (seconds).
    res = run_train_step_benchmark(overrides=[*SMALL, "train.compile=aot_eager"], batch=2,
                                   image_size=64, rounds=1, steps_per_round=1, warmup=0,
                                   device="cpu", compare_compile=True)
    c = res["contenders"]
    assert set(c) == {"trainer", "minimal", "compiled"}
    assert res["settings"]["compile_backend"] == "aot_eager"
    assert res["compile_ratio"] == pytest.approx(c["compiled"]["median_ms"]["total"]
                                                 / c["trainer"]["median_ms"]["total"])
    # Same starting weights and batch: the compiled graph computes the eager losses.
    first = res["first_loss"]
    assert first["compiled"] == pytest.approx(first["trainer"], rel=1e-5)
    table = format_table(res)
    assert "compiled/eager" in table and "torch.compile" in table
    assert run_train_step_benchmark(overrides=SMALL, batch=2, image_size=64, rounds=1,
                                    steps_per_round=1, warmup=0,
                                    device="cpu")["compile_ratio"] is None


def test_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="equal weighting"):
        run_train_step_benchmark(overrides=[*SMALL, "balancer.name=dwa"], batch=2,
                                 image_size=64, rounds=1, steps_per_round=1, device="cpu")
    with pytest.raises(ConfigError, match="multiple of 32"):
        run_train_step_benchmark(image_size=40, device="cpu")
    assert main(["train-step", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
