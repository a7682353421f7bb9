"""``tools/benchmark.py data`` on tiny sizes: every configuration is read and reported (the
figures themselves are for the README, never asserted)."""

from __future__ import annotations

import json

import pytest

from mtvision.benchmarks.data import format_table, run_data_benchmark
from mtvision.registry import ConfigError


def test_every_size_and_worker_count_is_measured(tmp_path):
    out = tmp_path / "data.json"
    res = run_data_benchmark(image_sizes=(32, 64), workers=(0, 1), batch=2, batches=2,
                             warmup=1, rounds=2, out=out)
    assert [(r["image_size"], r["workers"]) for r in res["rows"]] == [
        (32, 0), (32, 1), (64, 0), (64, 1)]
    assert all(len(r["rounds"]) == 2 and r["images_per_s"] > 0 for r in res["rows"])
    assert json.loads(out.read_text()) == res
    assert "images/s" in format_table(res)


def test_bad_sizes_are_one_clear_error():
    with pytest.raises(ConfigError, match="image sizes >= 32"):
        run_data_benchmark(image_sizes=(16,))
