"""Inference cost of one multi-task model against the single-task models it replaces.

For a config with several heads, the multi-task model and one model per head (same backbone and
neck, that head alone) predict the same random batch: forward and post-processing (NMS, argmax,
sigmoid), as ``model.predict`` does. The models are timed in interleaved rounds, in a new random
order each round, so drift (thermal, other load) hits all of them alike; the figure per model is
the median over rounds of each round's median. The headline is the ratio of the multi-task
latency to the sum of the single-task latencies: what one shared backbone saves.
"""

from __future__ import annotations

import copy
import os
import random
import statistics
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from mtvision.benchmarks.common import device_name, start_run, write_results
from mtvision.benchmarks.kernels import time_cpu, time_cuda
from mtvision.engine.device import amp_dtype
from mtvision.registry import ConfigError

DEFAULT_CONFIG = "demo"  # the shipped demo config (mtvision.config.resolve_config)


def _models(cfg: dict[str, Any]) -> dict[str, torch.nn.Module]:
    from mtvision.models import build_model

    tasks = list(cfg["model"]["heads"])
    if len(tasks) < 2:
        raise ConfigError(f"the inference benchmark compares a multi-task model with its "
                          f"single-task models: the config has {len(tasks)} head(s)")
    models = {f"{len(tasks)}-task": build_model(cfg["model"])}
    for task in tasks:
        single = copy.deepcopy(cfg["model"])
        single["heads"] = {task: single["heads"][task]}
        models[f"{task} only"] = build_model(single)
    return models


def _params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def run_inference_benchmark(
    config: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
    batch: int = 1, image_size: tuple[int, int] = (128, 128), rounds: int = 5,
    warmup_ms: float = 50.0, rep_ms: float = 200.0, device: str = "auto",
    out: str | os.PathLike[str] | None = None, seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Time ``model.predict`` of the multi-task model of ``config`` and of each single-task
    model; on CUDA also under autocast (``train.amp: auto``'s dtype: bf16 where the GPU has it
    natively, else fp16). Returns (and writes
    to ``out``) ``{"setup": {...}, "rows": [{"precision", "model", "params_m", "ms",
    "images_per_s"}], "ratios": {precision: multi / sum of singles}}``."""
    from mtvision.config import load_config

    dev = start_run(device, out)
    if batch < 1 or rounds < 1 or min(image_size) < 32:
        raise ConfigError(f"need batch >= 1, rounds >= 1 and image sides >= 32, got batch "
                          f"{batch}, rounds {rounds}, image size {tuple(image_size)}")
    cfg = load_config(config or DEFAULT_CONFIG, overrides or [])
    torch.manual_seed(seed)
    models = {name: m.to(dev).eval() for name, m in _models(cfg).items()}
    x = torch.randn(batch, 3, *image_size, device=dev)
    precisions: list[tuple[str, Any]] = [("fp32", nullcontext)]
    if dev.type == "cuda":
        amp = amp_dtype("auto", dev)
        precisions.append((f"amp-{str(amp).split('.')[-1]}",
                           lambda: torch.autocast("cuda", dtype=amp)))
    timer = time_cuda if dev.type == "cuda" else time_cpu
    rng = random.Random(seed)
    rows, ratios = [], {}
    for prec, ctx in precisions:
        per_round: dict[str, list[float]] = {name: [] for name in models}
        for r in range(rounds):
            order = list(models)
            rng.shuffle(order)
            for name in order:
                model = models[name]

                def call(model: torch.nn.Module = model, ctx: Any = ctx) -> None:
                    with torch.inference_mode(), ctx():
                        model.predict(x)

                per_round[name].append(timer(call, warmup_ms, rep_ms))
            log(f"{prec} round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {per_round[n][-1]:.1f} ms" for n in models))
        for name, model in models.items():
            ms = statistics.median(per_round[name])
            rows.append({"precision": prec, "model": name, "params_m": _params_m(model),
                         "ms": ms, "ms_range": [min(per_round[name]), max(per_round[name])],
                         "images_per_s": batch * 1000.0 / ms})
        multi = next(r["ms"] for r in rows if r["precision"] == prec and "-task" in r["model"])
        singles = sum(r["ms"] for r in rows if r["precision"] == prec and "only" in r["model"])
        ratios[prec] = multi / singles
    results = {
        "setup": {"config": str(config or DEFAULT_CONFIG), "overrides": list(overrides or []),
                  "backbone": cfg["model"]["backbone"]["name"], "tasks": list(cfg["model"]
                                                                             ["heads"]),
                  "batch": batch, "image_size": list(image_size), "rounds": rounds,
                  "device": device_name(dev), "torch": torch.__version__},
        "rows": rows,
        "ratios": ratios,
    }
    write_results(results, out)
    return results


def format_table(results: dict[str, Any]) -> str:
    """The rows as a table, then the multi / sum-of-singles ratio per precision."""
    s = results["setup"]
    lines = [f"{s['backbone']}, batch {s['batch']}, {s['image_size'][0]}x{s['image_size'][1]}, "
             f"{s['device']}; median of {s['rounds']} interleaved rounds",
             f"{'precision':<10} {'model':<12} {'params (M)':>10} {'ms':>9} {'range':>17} "
             f"{'images/s':>9}"]
    for r in results["rows"]:
        lo, hi = r["ms_range"]
        lines.append(f"{r['precision']:<10} {r['model']:<12} {r['params_m']:>10.2f} "
                     f"{r['ms']:>9.2f} {f'{lo:.2f}-{hi:.2f}':>17} {r['images_per_s']:>9.1f}")
    for prec, ratio in results["ratios"].items():
        lines.append(f"{prec}: multi-task / sum of single-task latency = {ratio:.3f}")
    return "\n".join(lines)
