"""tools/benchmark.py inference: rows per model, the ratio from the rows, the JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtvision.benchmarks.inference import format_table, run_inference_benchmark
from mtvision.registry import ConfigError
from tools.benchmark import main

SMALL = ["model.neck.channels=32"]


def test_rows_ratio_and_json(tmp_path: Path) -> None:
    out = tmp_path / "inf.json"
    res = run_inference_benchmark(overrides=SMALL, image_size=(64, 64), rounds=2, warmup_ms=0,
                                  rep_ms=1, device="cpu", out=out)
    names = [r["model"] for r in res["rows"]]
    assert names == ["4-task", "det only", "seg only", "edge only", "cls only"]
    singles = sum(r["ms"] for r in res["rows"][1:])
    assert res["ratios"]["fp32"] == pytest.approx(res["rows"][0]["ms"] / singles)
    for r in res["rows"]:
        assert r["ms_range"][0] <= r["ms"] <= r["ms_range"][1]
        assert r["images_per_s"] == pytest.approx(1000.0 / r["ms"])
    # One backbone and neck instead of four: the 4-task model has far fewer parameters than
    # the four single-task models together.
    assert res["rows"][0]["params_m"] < sum(r["params_m"] for r in res["rows"][1:]) / 2
    assert json.loads(out.read_text())["rows"] == res["rows"]
    assert "multi-task / sum of single-task latency" in format_table(res)


def test_one_head_is_an_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="has 1 head"):
        run_inference_benchmark(overrides=[*SMALL, "model.heads.det=null",
                                           "model.heads.seg=null", "model.heads.edge=null"],
                                device="cpu")
    assert main(["inference", "--device", "cpu", "--out", str(tmp_path), "--rounds", "1"]) == 2
    assert "is a directory" in capsys.readouterr().err
