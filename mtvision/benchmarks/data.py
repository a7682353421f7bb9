"""``tools/benchmark.py data``: images per second of the training input pipeline alone.

The demo's pipeline (synthetic shapes, its train transforms, the trainer's loader: uint8
samples, label checks in collate, persistent workers) is read at each image size with each
number of workers, without a model, so the figure is the ceiling the loader puts on a GPU's
training speed. Each configuration reads ``warmup`` batches untimed (workers starting, files
cached), then ``batches`` timed ones; rows are interleaved over ``rounds`` and the median of
the rounds is reported, so a busy machine slows every configuration alike.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtvision.benchmarks.common import device_name, start_run, write_results
from mtvision.registry import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _loader(config: str | os.PathLike[str], root: Path, size: int, batch: int,
            workers: int, n_images: int) -> tuple[Any, Any]:
    from mtvision.config import load_config
    from mtvision.data.build import build_dataset, build_loader, head_class_counts

    cfg = load_config(config, [
        "data.type=mtvision", f"data.root={root / str(size)}",
        f"data.synthetic={{num_train: {n_images}, num_val: 1, image_size: {size}, seed: 0}}",
        f"data.image_size=[{size}, {size}]"])
    ds = build_dataset(cfg["data"], cfg["data"]["train_split"], train=True)
    loader = build_loader(ds, batch, workers, train=True, seed=0,
                          num_classes=head_class_counts(cfg["model"]))
    return ds, loader


def _read(ds: Any, loader: Any, epoch: int, warmup: int, n: int) -> float:
    """Seconds to draw ``n`` batches from a fresh pass over ``loader``, after ``warmup``."""
    ds.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return elapsed


def run_data_benchmark(config: str | os.PathLike[str] | None = None,
                       image_sizes: Sequence[int] = (128, 512),
                       workers: Sequence[int] = (0, 1, 2), batch: int = 8, batches: int = 10,
                       warmup: int = 2, rounds: int = 3,
                       out: str | os.PathLike[str] | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Images/s of the loader for every (image size, workers); see the module docstring."""
    if min(image_sizes, default=0) < 32 or min(workers, default=-1) < 0 or batch < 1 \
            or batches < 1 or warmup < 0 or rounds < 1:
        raise ConfigError(f"need image sizes >= 32, workers >= 0, batch, batches and rounds "
                          f">= 1, warmup >= 0; got sizes {list(image_sizes)}, workers "
                          f"{list(workers)}, batch {batch}, batches {batches}, rounds {rounds}")
    dev = start_run("cpu", out)
    log = log or (lambda line: None)
    # Enough images that no epoch runs out: warm-up and timed batches of every round.
    n_images = batch * (warmup + batches)
    rows: dict[tuple[int, int], list[float]] = {(s, w): [] for s in image_sizes for w in workers}
    with tempfile.TemporaryDirectory(prefix="mtv-data-bench-") as tmp:
        loaders = {}
        for s in image_sizes:
            log(f"generating {n_images} images of {s} px")
            for w in workers:
                loaders[(s, w)] = _loader(config or DEFAULT_CONFIG, Path(tmp), s, batch, w,
                                          n_images)
        for r in range(rounds):
            for key, (ds, loader) in loaders.items():
                log(f"round {r + 1}/{rounds}: {key[0]} px, {key[1]} worker(s)")
                seconds = _read(ds, loader, r, warmup, batches)
                rows[key].append(batch * batches / max(seconds, 1e-9))
        loaders.clear()
    results = {
        "device": device_name(dev), "torch": torch.__version__, "cpus": os.cpu_count(),
        "settings": {"batch": batch, "batches": batches, "warmup": warmup, "rounds": rounds},
        "rows": [{"image_size": s, "workers": w, "images_per_s": round(statistics.median(v), 1),
                  "rounds": [round(x, 1) for x in v]} for (s, w), v in rows.items()],
    }
    write_results(results, out)
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = [f"input pipeline on {results['device']} (batch {results['settings']['batch']}, "
             f"median of {results['settings']['rounds']} rounds)",
             f"{'image size':>10}  {'workers':>7}  {'images/s':>9}"]
    lines += [f"{r['image_size']:>10}  {r['workers']:>7}  {r['images_per_s']:>9.1f}"
              for r in results["rows"]]
    return "\n".join(lines)
