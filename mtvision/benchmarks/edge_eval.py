"""The exact BSDS edge benchmark: the optimal matcher against pyEdgeEval's CSA, side by side.

Both score the same soft maps on the same images, thresholds and annotators (edge NMS, then
the BSDS protocol of :mod:`mtvision.metrics.edge`); the reference runs once per seed of its
random outlier graph, so its own spread is measured too. Times are wall-clock and the CPU time
of scoring the images (summed over them, measured in the workers), with the same number of
worker processes for both; on a shared machine the CPU time is the steadier figure. The
process pool's server is started before the timed runs, so its start-up is in neither.

The reference costs minutes per image, so its counts are kept per image and seed on disk
(:class:`ReferenceCache`): a stopped run resumes, and reseeds add up over several runs. When
it runs on a subset, the subset is spread over the split (:func:`spread_order`).

The soft maps are a user's PNG predictions (``--preds DIR``: ``DIR/<image id>.png``, 0-255)
or, by default, a classical gradient detector (Gaussian-smoothed Sobel magnitude), which needs
nothing but the data and gives textured, realistic maps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtvision.benchmarks.common import check_writable, write_results
from mtvision.data.formats.bsds import find_data_dir, load_boundaries
from mtvision.data.io import write_json_atomic
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


def spread_order(n: int) -> list[int]:
    """``range(n)`` in van der Corput order (0, n/2, n/4, 3n/4, ...): every prefix is spread
    over the whole range, so a reference that runs on the first M, or is stopped part-way,
    still samples the whole split."""
    bits = max(n - 1, 1).bit_length()
    order: list[int] = []
    seen: set[int] = set()
    for k in range(1 << bits):
        frac = int(format(k, f"0{bits}b")[::-1], 2) / (1 << bits)
        i = int(frac * n)  # 1 / 2**bits <= 1 / n: every bin is hit
        if i not in seen:
            seen.add(i)
            order.append(i)
    return order


class ReferenceCache:
    """Per-image CSA counts on disk (one JSON file each, written atomically), so that a
    stopped reference run resumes where it stopped and reseeds add up across runs. The folder
    is keyed by everything the counts depend on."""

    def __init__(self, root: str | Path, key: dict[str, Any]):
        import pyEdgeEval

        key = {**key, "pyEdgeEval": getattr(pyEdgeEval, "__version__", "?")}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = Path(root) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(key, self.dir / "key.json", indent=1)

    def _path(self, seed: int, image_id: str) -> Path:
        return self.dir / f"csa-{seed:x}" / f"{image_id}.json"

    def load(self, seed: int, image_id: str, shape: tuple[int, int]
             ) -> tuple[np.ndarray, float] | None:
        """The cached (counts, CPU seconds), None where absent or unreadable."""
        try:
            rec = json.loads(self._path(seed, image_id).read_text())
            counts = np.asarray(rec["counts"], dtype=np.float64)
            cpu = float(rec["cpu_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (counts, cpu) if counts.shape == shape else None

    def save(self, seed: int, image_id: str, counts: np.ndarray, cpu: float) -> None:
        path = self._path(seed, image_id)
        path.parent.mkdir(exist_ok=True)
        write_json_atomic({"counts": counts.astype(np.int64).tolist(), "cpu_s": cpu}, path)


def _timed_run(items: list, thresholds: np.ndarray, matcher: str, seed: int, nms: bool,
               workers: int, max_dist: float,
               on_image: Callable[[int, np.ndarray, float], None] | None = None
               ) -> dict[str, Any]:
    cpu: list[float] = []
    wall0 = time.perf_counter()
    counts = score_images(items, thresholds, max_dist, "exact", matcher, nms, workers,
                          progress=True, seed=seed, cpu_seconds=cpu, on_image=on_image)
    wall = time.perf_counter() - wall0
    return {"wall_s": wall, "cpu_s": float(sum(cpu)), "cpu_per_image": np.asarray(cpu),
            "counts": counts}


def _csa_run(items: list, ids: list[str], thresholds: np.ndarray, seed: int, nms: bool,
             workers: int, max_dist: float, cache: ReferenceCache | None) -> dict[str, Any]:
    """One reseeded CSA run over ``items``: the cached images read back, the others scored
    (and cached as each finishes). ``fresh`` lists the positions scored in this run."""
    shape = (len(thresholds), 4)
    counts = np.zeros((len(items), *shape))
    cpu = np.zeros(len(items))
    fresh = list(range(len(items)))
    if cache is not None:
        fresh = []
        for i, image_id in enumerate(ids):
            hit = cache.load(seed, image_id, shape)
            if hit is None:
                fresh.append(i)
            else:
                counts[i], cpu[i] = hit

    def keep(k: int, c: np.ndarray, s: float) -> None:
        if cache is not None:
            cache.save(seed, ids[fresh[k]], c, s)

    run = _timed_run([items[i] for i in fresh], thresholds, "csa", seed, nms, workers,
                     max_dist, keep)
    if fresh:
        counts[fresh] = run["counts"]
        cpu[fresh] = run["cpu_per_image"]
    return {"seed": seed, "wall_s": run["wall_s"] if fresh else 0.0, "cpu_s": float(cpu.sum()),
            "cpu_per_image": cpu, "fresh": fresh, "counts": counts}


def _scores(counts: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    res = benchmark_from_counts(counts, thresholds)
    return {k: res[k] for k in ("ODS", "OIS", "AP")}


def run_edge_eval_benchmark(root: str | Path, split: str = "test", images: int | None = 100,
                            reference_images: int | None = None, reseeds: int = 3,
                            thresholds: int = 99, max_dist: float = 0.0075, nms: bool = True,
                            workers: int | None = None, preds: str | Path | None = None,
                            out: str | Path | None = None,
                            reference_cache: str | Path | None = None, log: Log = print
                            ) -> dict[str, Any]:
    """Score ``images`` images with the optimal matcher, and ``reference_images`` of them
    (default: all; fewer: a prefix of :func:`spread_order`) with both matchers, CSA once per
    seed (``reseeds`` runs).

    CSA counts are kept per image in ``reference_cache`` (default: ``<out>.cache`` beside
    ``out``, none without ``out``): a rerun reads them back. Time ratios are taken over the
    images scored in this run only (side by side); the wall ratio only when none was cached.
    """
    if reseeds < 1:
        raise ConfigError(f"reseeds must be >= 1, got {reseeds}")
    if out is not None:
        check_writable(out)
        if reference_cache is None:
            reference_cache = Path(out).with_suffix(".cache")
    workers = default_workers() if workers is None else workers
    data = load_images(root, split, images, preds)
    ids = [name for name, _, _ in data]
    items = [(soft, gts, None) for _, soft, gts in data]
    ref_idx = spread_order(len(items))[:reference_images]
    n_ref = len(ref_idx)
    ts = bsds_thresholds(thresholds)
    cache = None
    if reference_cache is not None:
        source = str(Path(preds).resolve()) if preds is not None else "gradient sigma 2"
        cache = ReferenceCache(reference_cache, {
            "data": str(find_data_dir(root).resolve()), "split": split, "thresholds": thresholds,
            "max_dist": max_dist, "nms": nms, "predictions": source})
    log(f"edge-eval: {len(items)} images of '{split}' ({n_ref} with the reference), "
        f"{thresholds} thresholds, {workers} worker(s), nms={nms}"
        + (f", reference cache {cache.dir}" if cache is not None else ""))

    if workers > 1:  # start the pool's server (one import of the library) untimed
        blank = (np.zeros((8, 8)), [np.zeros((8, 8), dtype=bool)], None)
        score_images([blank] * workers, ts[:1], workers=workers)
    full = _timed_run(items, ts, "optimal", 0, nms, workers, max_dist)
    full.update(_scores(full["counts"], ts))
    log(f"optimal, {len(items)} images: ODS {full['ODS']:.4f} OIS {full['OIS']:.4f} AP "
        f"{full['AP']:.4f}, {full['wall_s']:.1f} s wall, {full['cpu_s']:.1f} s CPU")
    # Side by side on the reference's images (a subset of the same list: same counts).
    ref_items = [items[i] for i in ref_idx]
    ref_ids = [ids[i] for i in ref_idx]
    ours = {**_scores(full["counts"][ref_idx], ts), "wall_s": full["wall_s"],
            "cpu_s": full["cpu_s"]}
    ours_cpu = full["cpu_per_image"][ref_idx]
    if n_ref < len(items):
        side = _timed_run(ref_items, ts, "optimal", 0, nms, workers, max_dist)
        ours.update(wall_s=side["wall_s"], cpu_s=side["cpu_s"])
        ours_cpu = side["cpu_per_image"]
    refs = []
    for k in range(reseeds):
        seed = CORRESPONDENCE_SEED + k
        r = _csa_run(ref_items, ref_ids, ts, seed, nms, workers, max_dist, cache)
        r.update(_scores(r["counts"], ts))
        refs.append(r)
        log(f"csa seed {seed:#x}: ODS {r['ODS']:.4f} OIS {r['OIS']:.4f} AP {r['AP']:.4f}, "
            f"{len(r['fresh'])} image(s) scored ({n_ref - len(r['fresh'])} cached), "
            f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (cached images included)")
    ref_scores = {m: [r[m] for r in refs] for m in ("ODS", "OIS", "AP")}
    # Side by side only: the CPU of the images scored in this run, by both matchers.
    fresh_ours = sum(float(ours_cpu[r["fresh"]].sum()) for r in refs)
    fresh_csa = sum(float(r["cpu_per_image"][r["fresh"]].sum()) for r in refs)
    all_fresh = all(len(r["fresh"]) == n_ref for r in refs)
    ref_wall = float(np.mean([r["wall_s"] for r in refs]))
    results = {
        "split": split, "images": len(items), "reference_images": n_ref,
        "reference_image_ids": ref_ids,
        "thresholds": thresholds, "max_dist": max_dist, "nms": nms, "workers": workers,
        "predictions": str(preds) if preds is not None else "gradient (Sobel, sigma 2)",
        "optimal_all": {k: full[k] for k in ("ODS", "OIS", "AP", "wall_s", "cpu_s")}
        | {"cpu_s_per_image": full["cpu_s"] / max(len(items), 1)},
        "optimal": ours,
        "csa_runs": [{"seed": r["seed"], "ODS": r["ODS"], "OIS": r["OIS"], "AP": r["AP"],
                      "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                      "scored_images": len(r["fresh"]), "cached_images": n_ref - len(r["fresh"])}
                     for r in refs],
        "csa_mean": {m: float(np.mean(v)) for m, v in ref_scores.items()},
        "csa_spread": {m: float(np.max(v) - np.min(v)) for m, v in ref_scores.items()},
        "difference": {m: ours[m] - float(np.mean(v)) for m, v in ref_scores.items()},
        "wall_ratio": ours["wall_s"] / ref_wall if all_fresh and ref_wall > 0 else None,
        "cpu_ratio": fresh_ours / fresh_csa if fresh_csa > 0 else None,
        "cpu_ratio_images": sum(len(r["fresh"]) for r in refs),
        "reference_cache": str(cache.dir) if cache is not None else None,
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
    wall = f"{res['wall_ratio']:.3f}" if res["wall_ratio"] is not None else "n/a (cached)"
    cpu = f"{res['cpu_ratio']:.3f}" if res["cpu_ratio"] is not None else "n/a (all cached)"
    lines.append(f"time ratio optimal/csa: wall {wall}, CPU {cpu} "
                 f"(over {res['cpu_ratio_images']} image runs scored here)")
    a = res["optimal_all"]
    if res["images"] != res["reference_images"]:
        lines.append(f"optimal on all {res['images']} images: ODS {a['ODS']:.4f} OIS "
                     f"{a['OIS']:.4f} AP {a['AP']:.4f}, {a['wall_s']:.1f} s wall, "
                     f"{a['cpu_s']:.1f} s CPU")
    lines.append(f"optimal CPU per image: {a['cpu_s_per_image']:.2f} s")
    return "\n".join(lines)
