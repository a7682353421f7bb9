"""Published numbers as Delta_m baselines: the YAML form of ``tools/eval.py --baselines`` and the
files in configs/benchmarks/published."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtvision.metrics.baselines import load_baselines
from mtvision.metrics.multitask import delta_m
from mtvision.registry import ConfigError

PUBLISHED = sorted((Path(__file__).resolve().parents[2] / "configs" / "benchmarks"
                    / "published").glob("*.yaml"))


@pytest.mark.parametrize("path", PUBLISHED, ids=[p.stem for p in PUBLISHED])
def test_published_files_load(path: Path) -> None:
    base = load_baselines(path)
    tasks = set(base)
    assert tasks in ({"seg", "parts", "sal", "normals", "edge"},
                     {"seg", "depth", "normals", "edge"})
    for task, metrics in base.items():
        for name, value in metrics.items():
            # Fractions came in percent and are now in [0, 1]; degrees and metres as written.
            if name in ("mIoU", "maxF", "ODS"):
                assert 0.0 < value < 1.0, (task, name)


def test_percent_values_and_delta_m_by_hand(tmp_path: Path) -> None:
    f = tmp_path / "pub.yaml"
    f.write_text("paper: X\ntable: Table 1\nresults:\n  seg: {mIoU: 50%}\n"
                 "  normals: {mean_angle: 20.0}\n  depth: {rmse: 0.5}\n")
    base = load_baselines(f)
    assert base == {"seg": {"mIoU": 0.5}, "normals": {"mean_angle": 20.0},
                    "depth": {"rmse": 0.5}}
    ours = {"seg": {"mIoU": 0.55, "pixel_acc": 0.9},
            "normals": {"mean_angle": 22.0, "median_angle": 15.0},
            "depth": {"abs_err": 0.4, "rel_err": 0.1, "rmse": 0.4}}
    out = delta_m(ours, base)
    # seg +10 %, normals -(22 - 20) / 20 = -10 %, depth (only RMSE published) -(0.4 - 0.5) / 0.5
    # = +20 %.
    assert out["tasks"] == pytest.approx({"seg": 10.0, "normals": -10.0, "depth": 20.0})
    assert out["metrics"]["depth"] == ["rmse"]
    assert out["per_task"] == pytest.approx(20.0 / 3)


def test_a_plain_mapping_is_read_too(tmp_path: Path) -> None:
    f = tmp_path / "pub.yml"
    f.write_text("sal: {maxF: '84.81%'}\nedge: {ODS: 0.73}\n")
    assert load_baselines(f) == {"sal": {"maxF": pytest.approx(0.8481)}, "edge": {"ODS": 0.73}}


@pytest.mark.parametrize("text, message", [
    ("results:\n  semseg: {mIoU: 50%}\n", "unknown task 'semseg'"),
    ("results:\n  seg: {miou: 50%}\n", "unknown metric 'seg.miou'"),
    ("results:\n  seg: {mIoU: fifty}\n", "'seg.mIoU': expected a number or a percentage"),
    ("results:\n  seg: {mIoU: true}\n", "'seg.mIoU': expected a number"),
    ("source: X\nresults:\n  seg: {mIoU: 50%}\n", "unknown key 'source'"),
    ("results: [1, 2]\n", "must map task"),
    ("results: {seg: {mIoU: [50%\n", "not valid YAML"),
])
def test_bad_published_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pub.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_baselines(f)
    assert str(f) in str(e.value)
