"""tools/benchmark.py edge-eval on a tiny BSDS-layout folder: both matchers side by side."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from mtvision.benchmarks.edge_eval import format_table, run_edge_eval_benchmark
from mtvision.data.io import DataError
from mtvision.metrics.edge import CORRESPONDENCE_SEED, edge_benchmark
from mtvision.registry import ConfigError
from tools.benchmark import main


def tiny_bsds(root: Path, n: int = 2) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """``n`` 48x64 images (grey squares) with two annotators each, in BSDS500's layout."""
    rng = np.random.default_rng(0)
    images, gts = root / "data" / "images" / "test", root / "data" / "groundTruth" / "test"
    images.mkdir(parents=True)
    gts.mkdir(parents=True)
    out = []
    for i in range(n):
        img = np.full((48, 64, 3), 40, np.uint8)
        x, y = rng.integers(8, 30, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 22, int(y) + 14), (200, 180, 160), -1)
        cv2.imwrite(str(images / f"{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
        edge = cv2.Canny(img, 50, 150) > 0
        anns = [edge, np.roll(edge, 1, axis=int(rng.integers(0, 2)))]
        cell = np.empty((1, 2), dtype=object)
        for k, a in enumerate(anns):
            cell[0, k] = {"Boundaries": a.astype(np.uint8)}
        scipy.io.savemat(str(gts / f"{i}.mat"), {"groundTruth": cell})
        out.append((img, anns))
    return out


def test_side_by_side_and_json(tmp_path: Path) -> None:
    data = tiny_bsds(tmp_path / "bsds")
    out = tmp_path / "edge.json"
    res = run_edge_eval_benchmark(tmp_path / "bsds", images=2, reseeds=2, thresholds=5,
                                  max_dist=0.02, workers=1, out=out, log=lambda _: None)
    assert res["images"] == res["reference_images"] == 2 and len(res["csa_runs"]) == 2
    assert [r["seed"] for r in res["csa_runs"]] == [CORRESPONDENCE_SEED, CORRESPONDENCE_SEED + 1]
    for m in ("ODS", "OIS", "AP"):
        runs = [r[m] for r in res["csa_runs"]]
        assert res["csa_mean"][m] == pytest.approx(np.mean(runs))
        assert res["csa_spread"][m] == pytest.approx(max(runs) - min(runs))
        assert res["difference"][m] == pytest.approx(res["optimal"][m] - np.mean(runs))
        assert abs(res["difference"][m]) < 0.01
    # The optimal run is the library's benchmark of the same maps.
    from mtvision.benchmarks.edge_eval import gradient_edges

    ref = edge_benchmark([gradient_edges(img) for img, _ in data], [a for _, a in data],
                         max_dist=0.02, thresholds=5, nms=True)
    assert res["optimal"]["ODS"] == pytest.approx(ref["ODS"], abs=1e-12)
    assert res["wall_ratio"] > 0 and res["cpu_ratio"] > 0
    assert json.loads(out.read_text())["optimal"]["ODS"] == res["optimal"]["ODS"]
    assert "csa mean" in format_table(res)


def test_reference_on_every_kth_image(tmp_path: Path) -> None:
    data = tiny_bsds(tmp_path / "bsds", n=3)
    res = run_edge_eval_benchmark(tmp_path / "bsds", images=3, reseeds=1, reference_every=2,
                                  thresholds=5, max_dist=0.02, workers=1, log=lambda _: None)
    assert res["images"] == 3 and res["reference_images"] == 2
    assert res["reference_image_ids"] == ["0", "2"]
    from mtvision.benchmarks.edge_eval import gradient_edges

    sub = [data[0], data[2]]
    ref = edge_benchmark([gradient_edges(img) for img, _ in sub], [a for _, a in sub],
                         max_dist=0.02, thresholds=5, nms=True)
    assert res["optimal"]["ODS"] == pytest.approx(ref["ODS"], abs=1e-12)
    assert res["optimal"]["wall_s"] is not None  # timed on the subset, side by side


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no BSDS500 data"):
        run_edge_eval_benchmark(tmp_path, log=lambda _: None)
    assert main(["edge-eval", "--data", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    with pytest.raises(ConfigError, match="reseeds"):
        run_edge_eval_benchmark(tmp_path, reseeds=0, log=lambda _: None)
    with pytest.raises(ConfigError, match="reference_every"):
        run_edge_eval_benchmark(tmp_path, reference_every=0, log=lambda _: None)
