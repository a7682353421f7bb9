"""The exact BSDS edge benchmark: the optimal matcher against pyEdgeEval's CSA, side by side.

Both score the same soft maps on the same images, thresholds and annotators (edge NMS, then
the BSDS protocol of :mod:`mtvision.metrics.edge`); the reference runs once per seed of its
random outlier graph, so its own spread is measured too. Times are wall-clock and the CPU time
of scoring the images (summed over them, measured in the workers), with the same number of
worker processes for both; on a shared machine the CPU time is the steadier figure. The
process pool's server is started before the timed runs, so its start-up is in neither.

The soft maps are a user's PNG predictions (``--preds DIR``: ``DIR/<image id>.png``, 0-255)
or, by default, a classical gradient detector (Gaussian-smoothed Sobel magnitude), which needs
nothing but the data and gives textured, realistic maps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtvision.benchmarks.common import check_writable, write_results
from mtvision.data.formats.bsds import find_data_dir, load_boundaries
from mtvision.metrics.edge import (
    CORRESPONDENCE_SEED,
    benchmark_from_counts,
    bsds_thresholds,
    default_workers,
    score_images,
)
from mtvision.registry import ConfigError

Log = Callable[[str], None]


def gradient_edges(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """A soft edge map in [0, 1]: Sobel gradient magnitude of the smoothed grey image,
    divided by its 99.5th percentile."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), sigma)
    mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return np.clip(mag / max(float(np.percentile(mag, 99.5)), 1e-6), 0, 1).astype(np.float64)


def load_images(root: str | Path, split: str, limit: int | None, preds: str | Path | None
                ) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(image id, soft map, annotators) of the first ``limit`` images of ``split``."""
    data = find_data_dir(root)
    mats = sorted((data / "groundTruth" / split).glob("*.mat"))
    if not mats:
        raise ConfigError(f"no ground truth .mat files in '{data / 'groundTruth' / split}'")
    out = []
    for mat in mats[:limit]:
        name = mat.stem
        if preds is None:
            path = data / "images" / split / f"{name}.jpg"
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ConfigError(f"cannot read image '{path}'")
            soft = gradient_edges(image)
        else:
            path = Path(preds) / f"{name}.png"
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise ConfigError(f"cannot read prediction '{path}'")
            soft = grey.astype(np.float64) / 255.0
        gts = load_boundaries(mat, soft.shape)
        out.append((name, soft, gts))
    return out


def _timed_run(items: list, thresholds: np.ndarray, matcher: str, seed: int, nms: bool,
               workers: int, max_dist: float) -> dict[str, Any]:
    cpu: list[float] = []
    wall0 = time.perf_counter()
    counts = score_images(items, thresholds, max_dist, "exact", matcher, nms, workers,
                          progress=True, seed=seed, cpu_seconds=cpu)
    wall = time.perf_counter() - wall0
    res = benchmark_from_counts(counts, thresholds)
    return {"matcher": matcher, "seed": seed if matcher == "csa" else None,
            "ODS": res["ODS"], "OIS": res["OIS"], "AP": res["AP"],
            "wall_s": wall, "cpu_s": float(sum(cpu)), "counts": counts}


def _scores(run: dict[str, Any]) -> dict[str, float]:
    return {k: run[k] for k in ("ODS", "OIS", "AP")}


def run_edge_eval_benchmark(root: str | Path, split: str = "test", images: int | None = 100,
                            reference_images: int | None = None, reseeds: int = 3,
                            reference_every: int = 1, thresholds: int = 99,
                            max_dist: float = 0.0075, nms: bool = True,
                            workers: int | None = None, preds: str | Path | None = None,
                            out: str | Path | None = None, log: Log = print
                            ) -> dict[str, Any]:
    """Score ``images`` images with the optimal matcher, and ``reference_images`` of them
    (default: all) with both matchers, CSA once per seed (``reseeds`` runs). The reference's
    images are every ``reference_every``-th image from the first (spread over the split when
    the reference cannot run on all of them)."""
    if reseeds < 1:
        raise ConfigError(f"reseeds must be >= 1, got {reseeds}")
    if reference_every < 1:
        raise ConfigError(f"reference_every must be >= 1, got {reference_every}")
    if out is not None:
        check_writable(out)
    workers = default_workers() if workers is None else workers
    data = load_images(root, split, images, preds)
    items = [(soft, gts, None) for _, soft, gts in data]
    ref_idx = list(range(0, len(items), reference_every))[:reference_images]
    n_ref = len(ref_idx)
    ts = bsds_thresholds(thresholds)
    log(f"edge-eval: {len(items)} images of '{split}' ({n_ref} with the reference), "
        f"{thresholds} thresholds, {workers} worker(s), nms={nms}")

    if workers > 1:  # start the pool's server (one import of the library) untimed
        blank = (np.zeros((8, 8)), [np.zeros((8, 8), dtype=bool)], None)
        score_images([blank] * workers, ts[:1], workers=workers)
    full = _timed_run(items, ts, "optimal", 0, nms, workers, max_dist)
    log(f"optimal, {len(items)} images: ODS {full['ODS']:.4f} OIS {full['OIS']:.4f} AP "
        f"{full['AP']:.4f}, {full['wall_s']:.1f} s wall, {full['cpu_s']:.1f} s CPU")
    # Side by side on the reference's images (a subset of the same list: same counts).
    ref_items = [items[i] for i in ref_idx]
    ours = {**_scores(benchmark_from_counts(full["counts"][ref_idx], ts)),
            "wall_s": None, "cpu_s": None}
    if n_ref == len(items):
        ours.update(wall_s=full["wall_s"], cpu_s=full["cpu_s"])
    else:
        side = _timed_run(ref_items, ts, "optimal", 0, nms, workers, max_dist)
        ours.update(wall_s=side["wall_s"], cpu_s=side["cpu_s"])
    refs = []
    for k in range(reseeds):
        seed = CORRESPONDENCE_SEED + k
        refs.append(_timed_run(ref_items, ts, "csa", seed, nms, workers, max_dist))
        r = refs[-1]
        log(f"csa seed {seed:#x}: ODS {r['ODS']:.4f} OIS {r['OIS']:.4f} AP {r['AP']:.4f}, "
            f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU")
    ref_scores = {m: [r[m] for r in refs] for m in ("ODS", "OIS", "AP")}
    ref_wall = float(np.mean([r["wall_s"] for r in refs]))
    ref_cpu = float(np.mean([r["cpu_s"] for r in refs]))
    results = {
        "split": split, "images": len(items), "reference_images": n_ref,
        "reference_image_ids": [data[i][0] for i in ref_idx],
        "thresholds": thresholds, "max_dist": max_dist, "nms": nms, "workers": workers,
        "predictions": str(preds) if preds is not None else "gradient (Sobel, sigma 2)",
        "optimal_all": {**_scores(full), "wall_s": full["wall_s"], "cpu_s": full["cpu_s"],
                        "cpu_s_per_image": full["cpu_s"] / max(len(items), 1)},
        "optimal": ours,
        "csa_runs": [{k: v for k, v in r.items() if k != "counts"} for r in refs],
        "csa_mean": {m: float(np.mean(v)) for m, v in ref_scores.items()},
        "csa_spread": {m: float(np.max(v) - np.min(v)) for m, v in ref_scores.items()},
        "difference": {m: ours[m] - float(np.mean(v)) for m, v in ref_scores.items()},
        "wall_ratio": ours["wall_s"] / ref_wall if ref_wall > 0 else None,
        "cpu_ratio": ours["cpu_s"] / ref_cpu if ref_cpu > 0 else None,
    }
    write_results(results, out)
    return results


def format_table(res: dict[str, Any]) -> str:
    """The side-by-side results as a small text table."""
    lines = [f"{res['reference_images']} images, {res['thresholds']} thresholds, "
             f"{res['workers']} worker(s), predictions: {res['predictions']}",
             f"{'':24}{'ODS':>8}{'OIS':>8}{'AP':>8}{'wall s':>9}{'CPU s':>9}"]

    def row(name: str, r: dict[str, Any]) -> str:
        wall = f"{r['wall_s']:9.1f}" if r.get("wall_s") is not None else f"{'':9}"
        cpu = f"{r['cpu_s']:9.1f}" if r.get("cpu_s") is not None else f"{'':9}"
        return f"{name:24}{r['ODS']:8.4f}{r['OIS']:8.4f}{r['AP']:8.4f}{wall}{cpu}"

    lines.append(row("optimal", res["optimal"]))
    for r in res["csa_runs"]:
        lines.append(row(f"csa seed {r['seed']:#x}", r))
    lines.append(row("csa mean", res["csa_mean"]))
    lines.append(f"{'csa spread (max-min)':24}" + "".join(f"{res['csa_spread'][m]:8.4f}"
                                                          for m in ("ODS", "OIS", "AP")))
    lines.append(f"{'optimal - csa mean':24}" + "".join(f"{res['difference'][m]:+8.4f}"
                                                        for m in ("ODS", "OIS", "AP")))
    lines.append(f"time ratio optimal/csa: wall {res['wall_ratio']:.3f}, "
                 f"CPU {res['cpu_ratio']:.3f}")
    a = res["optimal_all"]
    if res["images"] != res["reference_images"]:
        lines.append(f"optimal on all {res['images']} images: ODS {a['ODS']:.4f} OIS "
                     f"{a['OIS']:.4f} AP {a['AP']:.4f}, {a['wall_s']:.1f} s wall, "
                     f"{a['cpu_s']:.1f} s CPU")
    lines.append(f"optimal CPU per image: {a['cpu_s_per_image']:.2f} s")
    return "\n".join(lines)
