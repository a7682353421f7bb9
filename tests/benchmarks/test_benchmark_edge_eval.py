"""tools/benchmark.py edge-eval on a tiny BSDS-layout folder: both matchers side by side."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from mtvision.benchmarks.edge_eval import format_table, run_edge_eval_benchmark, spread_order
from mtvision.data.io import DataError
from mtvision.metrics.edge import CORRESPONDENCE_SEED, edge_benchmark, score_images
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


def test_spread_order() -> None:
    assert spread_order(1) == [0]
    assert spread_order(4) == [0, 2, 1, 3]
    assert spread_order(3) == [0, 1, 2]  # fractions 0, 1/2, 1/4, 3/4 of 3, repeats dropped
    order = spread_order(100)
    assert sorted(order) == list(range(100))
    assert order[:4] == [0, 50, 25, 75]
    # A prefix of 2**k is a grid of step n / 2**k: floor(100 * j / 8), j = 0..7.
    assert sorted(order[:8]) == [0, 12, 25, 37, 50, 62, 75, 87]


def test_reference_on_a_spread_subset(tmp_path: Path) -> None:
    data = tiny_bsds(tmp_path / "bsds", n=4)
    res = run_edge_eval_benchmark(tmp_path / "bsds", images=4, reference_images=2, reseeds=1,
                                  thresholds=5, max_dist=0.02, workers=1, log=lambda _: None)
    assert res["images"] == 4 and res["reference_images"] == 2
    assert res["reference_image_ids"] == ["0", "2"]
    from mtvision.benchmarks.edge_eval import gradient_edges

    sub = [data[0], data[2]]
    ref = edge_benchmark([gradient_edges(img) for img, _ in sub], [a for _, a in sub],
                         max_dist=0.02, thresholds=5, nms=True)
    assert res["optimal"]["ODS"] == pytest.approx(ref["ODS"], abs=1e-12)
    assert res["optimal"]["wall_s"] is not None  # timed on the subset, side by side


def test_reference_cache_resumes_and_is_keyed(tmp_path: Path) -> None:
    tiny_bsds(tmp_path / "bsds", n=2)
    out = tmp_path / "edge.json"
    kw = {"images": 2, "reseeds": 1, "thresholds": 5, "max_dist": 0.02, "workers": 1,
          "out": out, "log": lambda _: None}
    first = run_edge_eval_benchmark(tmp_path / "bsds", **kw)
    cache = Path(first["reference_cache"])
    assert cache.parent == tmp_path / "edge.cache"
    files = sorted((cache / f"csa-{CORRESPONDENCE_SEED:x}").glob("*.json"))
    assert [f.stem for f in files] == ["0", "1"]
    assert first["csa_runs"][0]["scored_images"] == 2 and first["cpu_ratio"] is not None
    # Everything cached: the same reference scores, and no side-by-side ratio to report.
    again = run_edge_eval_benchmark(tmp_path / "bsds", **kw)
    assert again["csa_runs"][0]["cached_images"] == 2
    assert again["csa_mean"] == first["csa_mean"]
    assert again["wall_ratio"] is None and again["cpu_ratio"] is None
    assert "n/a" in format_table(again)
    # A lost image (a run stopped part-way) and a torn file are scored again; the rest is read.
    files[0].unlink()
    files[1].write_text("{not json")
    resumed = run_edge_eval_benchmark(tmp_path / "bsds", **kw)
    assert resumed["csa_runs"][0]["scored_images"] == 2
    assert resumed["csa_mean"] == pytest.approx(first["csa_mean"], abs=1e-12)
    (cache / f"csa-{CORRESPONDENCE_SEED:x}" / "1.json").unlink()
    resumed = run_edge_eval_benchmark(tmp_path / "bsds", **kw)
    assert resumed["csa_runs"][0]["scored_images"] == 1
    assert resumed["csa_runs"][0]["cached_images"] == 1
    assert resumed["wall_ratio"] is None and resumed["cpu_ratio"] is not None
    # Other options are another key: nothing is read from the first folder.
    other = run_edge_eval_benchmark(tmp_path / "bsds", **{**kw, "thresholds": 4})
    assert Path(other["reference_cache"]) != cache
    assert other["csa_runs"][0]["scored_images"] == 2


def test_parallel_scoring_keeps_the_order_and_reports_each_image() -> None:
    rng = np.random.default_rng(3)
    items = []
    for i in range(4):  # unequal sizes: the workers finish out of order
        h, w = 24 + 8 * i, 40 - 4 * i
        gt = np.zeros((h, w), bool)
        gt[h // 2, 2:-2] = True
        items.append((rng.random((h, w)) * 0.3 + 0.7 * gt, [gt, np.roll(gt, 1, 0)], None))
    ts = np.linspace(0.1, 0.9, 4)
    seen: dict[int, np.ndarray] = {}
    serial = score_images(items, ts, 0.05, workers=1)
    parallel = score_images(items, ts, 0.05, workers=2,
                            on_image=lambda i, c, _: seen.setdefault(i, c))
    np.testing.assert_array_equal(parallel, serial)
    assert sorted(seen) == [0, 1, 2, 3]
    for i, counts in seen.items():
        np.testing.assert_array_equal(counts, serial[i])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no BSDS500 data"):
        run_edge_eval_benchmark(tmp_path, log=lambda _: None)
    assert main(["edge-eval", "--data", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    with pytest.raises(ConfigError, match="reseeds"):
        run_edge_eval_benchmark(tmp_path, reseeds=0, log=lambda _: None)
