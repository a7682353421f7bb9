"""What each loss-balancing method costs per training step, relative to equal weighting.

Every configuration (backbone, method, mode) is one ``Trainer`` of the demo model (ResNet + FPN
with the det/seg/edge/cls heads) on the same fixed batch of the built-in shapes data: the
timed call is ``Trainer.train_step`` (forward, per-task losses, the method's backward, clipping,
optimizer step), so the figure is what the method adds to a real step, data loading excluded.

Loss-based methods (``requires == "losses"``) run once (mode ``None``); gradient methods
(subclasses of ``GradientBalancer``) run in each requested mode. ``fixed`` (equal weighting) is
always run: it is the baseline every ratio divides by.

Drift: the configurations are interleaved. Round r runs ``steps_per_round`` timed steps of every
configuration in turn, in an order shuffled per round with a fixed seed, so a machine that
slowly speeds up or slows down (clocks, other jobs) shifts all of them alike instead of
whichever method happened to run last. A configuration's figure is the median of all its timed
steps, its ratio that median over ``fixed``'s median of the same backbone and run.

On CUDA the Gram kernel ``kernels.gram(G)`` is also timed against ``G @ G.T`` on a ``T x P``
matrix of the model's size (T tasks, P shared parameters), float32 and bfloat16, with
``triton.testing.do_bench``; achieved GB/s counts G read once.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtvision.benchmarks.common import device_name, start_run, triton_version, write_results
from mtvision.config import resolve_config
from mtvision.registry import BACKBONES, BALANCERS, ConfigError, closest

MODES = ("param", "feature")
BASELINE = "fixed"
DEFAULT_CONFIG = "demo"  # the shipped demo config (mtvision.config.resolve_config)
# The shuffled order of each round comes from this seed: reruns interleave identically.
ORDER_SEED = 0
# The targets of the issue, as ratios to equal weighting.
FEATURE_TARGET = 1.2  # every Gram-based method in feature mode
PARAM_TARGET = 3.0  # every method in param mode
AIM = (f"aim: every Gram-based method within {FEATURE_TARGET:g}x of equal weighting in feature "
       f"mode, every method within {PARAM_TARGET:g}x in param mode")
GRAM_NOTE = "the Gram kernel benchmark needs CUDA: not run (gram is null)."
# Build every configuration of a backbone before timing when their estimated state takes at
# most this share of the free memory; otherwise each is rebuilt (and warmed up) per round.
RESIDENT_SHARE = 0.5
FLOAT_BYTES = 4


@dataclass
class _Slot:
    """One configuration: its balancer config, its trainer while built and its timings."""

    backbone: str
    method: str
    mode: str | None
    kind: str
    gram_based: bool
    work_dir: Path
    trainer: Any = None
    times_ms: list[float] = field(default_factory=list)
    skipped: int = 0

    @property
    def balancer_cfg(self) -> dict[str, Any]:
        # Only a GradientBalancer takes a mode; any other method's mode is its own.
        if self.kind == "gradient":
            return {"name": self.method, "mode": self.mode}
        return {"name": self.method}


# ---------------------------------------------------------------- methods
def method_kind(name: str) -> tuple[str, bool]:
    """``(kind, gram_based)`` of balancer ``name``: kind ``"gradient"`` for a
    ``GradientBalancer`` (run in each mode), else the class's ``requires`` (``"losses"``: run
    once). Gram-based = a gradient method whose update is ``w^T G`` from the Gram matrix, i.e.
    one that keeps ``GradientBalancer.direction`` (per-coordinate rules such as GradDrop
    override it)."""
    from mtvision.balancing import GradientBalancer

    cls = BALANCERS.get(name)
    if isinstance(cls, type) and issubclass(cls, GradientBalancer):
        gram_based = (bool(getattr(cls, "needs_gram", False))
                      and cls.direction is GradientBalancer.direction)
        return "gradient", gram_based
    return str(getattr(cls, "requires", "losses")), False


def _resolve_methods(methods: Sequence[str] | str | None) -> list[str]:
    import mtvision.balancing  # noqa: F401 - registers every method

    if methods is None:
        names = BALANCERS.names()
    else:
        names = [methods] if isinstance(methods, str) else list(methods)
        if not names:
            raise ConfigError("no balancing method to benchmark")
        for name in names:
            BALANCERS.get(name)  # a ConfigError naming the closest method
    # The baseline always runs (first), since every ratio divides by it.
    return list(dict.fromkeys([BASELINE, *names]))


def _resolve_modes(modes: Sequence[str] | str) -> list[str]:
    modes = [modes] if isinstance(modes, str) else list(modes)
    if not modes:
        raise ConfigError(f"no balancing mode to benchmark; modes: {', '.join(MODES)}")
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown balancing mode '{mode}'{closest(mode, list(MODES))}; "
                              f"modes: {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def _resolve_backbones(backbones: Sequence[str] | str) -> list[str]:
    import mtvision.models  # noqa: F401 - registers the backbones

    backbones = [backbones] if isinstance(backbones, str) else list(backbones)
    if not backbones:
        raise ConfigError("no backbone to benchmark")
    for name in backbones:
        BACKBONES.get(name)
    return list(dict.fromkeys(backbones))


def _check_sizes(batch: int, image_size: int, rounds: int, steps_per_round: int,
                 warmup: int) -> None:
    if batch < 1 or rounds < 1 or steps_per_round < 1 or warmup < 0:
        raise ConfigError(f"batch, rounds and steps must be >= 1 and warmup >= 0, got batch "
                          f"{batch}, rounds {rounds}, steps {steps_per_round}, warmup {warmup}")
    # The backbone's last stage has stride 32; other sizes leave the FPN levels mismatched.
    if image_size < 32 or image_size % 32:
        raise ConfigError(f"image size must be a multiple of 32, got {image_size}")


# ---------------------------------------------------------------- trainers
def _load_cfg(config: Path, slot: _Slot, data_root: Path, batch: int, image_size: int,
              total_steps: int) -> dict[str, Any]:
    from mtvision.config import load_config

    bal = slot.balancer_cfg
    bal_yaml = ", ".join(f"{k}: {v}" for k, v in bal.items())
    return load_config(config, [
        "data.type=mtvision",
        f"data.root={data_root}",
        # The parameters the data was generated with, so the trainer finds it cached.
        f"data.synthetic={{num_train: {batch}, num_val: 1, image_size: {image_size}, seed: 0}}",
        f"data.image_size=[{image_size}, {image_size}]",
        f"data.batch_size={batch}",
        "data.num_workers=0",
        f"model.backbone.name={slot.backbone}",
        f"balancer={{{bal_yaml}}}",
        f"train.max_iters={total_steps}",
        "train.tensorboard=false",
    ])


def _build(slot: _Slot, config: Path, data_root: Path, batch: int, image_size: int,
           total_steps: int, device: torch.device) -> Any:
    from mtvision.engine.trainer import Trainer

    cfg = _load_cfg(config, slot, data_root, batch, image_size, total_steps)
    trainer = Trainer(cfg, slot.work_dir, device=str(device), progress=False)
    trainer.model.train()
    return trainer


def _drop(slot: _Slot, device: torch.device) -> None:
    if slot.trainer is None:
        return
    slot.trainer.logger.close()
    slot.trainer = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _step_ms(trainer: Any, batch: dict[str, Any], device: torch.device) -> tuple[float, bool]:
    """Wall-clock ms of one ``train_step`` (synchronised on CUDA: the step's kernels are
    asynchronous) and whether it was skipped."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3, out is None


def _state_bytes(trainer: Any, slot: _Slot) -> int:
    """Memory one built configuration keeps between steps: weights, gradients and AdamW's two
    moments of every parameter, plus a param-mode method's T x P rows and flat update."""
    n_all = sum(p.numel() for p in trainer.params)
    total = 4 * n_all
    if slot.kind == "gradient" and slot.mode == "param":
        n_shared = sum(p.numel() for p in trainer.shared_params if p.requires_grad)
        total += (len(trainer.model.task_names) + 1) * n_shared
    return total * FLOAT_BYTES


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- the Gram kernel (CUDA)
def _time_gram(n_shared: int, tasks: int, device: torch.device) -> list[dict[str, Any]]:
    """``kernels.gram(G)`` against ``G @ G.T`` on a random ``tasks x n_shared`` G."""
    import triton.testing

    from mtvision.kernels import gram  # written alongside the gradient methods: imported when used

    records = []
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        G = torch.randn((tasks, n_shared), generator=gen, device=device, dtype=dtype)
        nbytes = G.numel() * G.element_size()
        with torch.cuda.device(device):
            gram_ms = float(triton.testing.do_bench(lambda G=G: gram(G), return_mode="median"))
            mm_ms = float(triton.testing.do_bench(lambda G=G: G @ G.T, return_mode="median"))
        records.append({
            "T": tasks, "P": n_shared, "dtype": str(dtype).removeprefix("torch."),
            "bytes": nbytes, "gram_ms": gram_ms, "matmul_ms": mm_ms,
            "gram_gbps": nbytes / (gram_ms * 1e-3) / 1e9,
            "matmul_gbps": nbytes / (mm_ms * 1e-3) / 1e9,
            "speedup": mm_ms / gram_ms,
        })
        del G
    return records


# ---------------------------------------------------------------- driver
def _label(slot: _Slot) -> str:
    return f"{slot.method}/{slot.mode}" if slot.mode else slot.method


def _target(slot: _Slot) -> float | None:
    if slot.mode == "param":
        return PARAM_TARGET
    if slot.mode == "feature" and slot.gram_based:
        return FEATURE_TARGET
    return None


def _run_backbone(backbone: str, methods: list[str], modes: list[str], config: Path,
                  data_root: Path, work_root: Path, batch_size: int, image_size: int,
                  rounds: int, steps: int, warmup: int, device: torch.device,
                  log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from mtvision.data.build import move_batch

    slots = []
    for method in methods:
        kind, gram_based = method_kind(method)
        for mode in (modes if kind == "gradient" else [None if kind == "losses" else kind]):
            slots.append(_Slot(backbone, method, mode, kind, gram_based,
                               work_root / f"{backbone}-{method}-{mode or 'losses'}"))
    total_steps = warmup * (rounds + 1) + rounds * steps

    # The baseline first: its loader gives the one batch every step reuses, already on the
    # device, so neither loading nor the host-to-device copy is timed.
    base = slots[0]
    base.trainer = _build(base, config, data_root, batch_size, image_size, total_steps, device)
    raw = next(iter(base.trainer.train_loader))
    batch = move_batch(raw, device)

    def build(slot: _Slot) -> None:
        if slot.trainer is None:
            slot.trainer = _build(slot, config, data_root, batch_size, image_size, total_steps,
                                  device)
        for _ in range(warmup):  # the first steps allocate buffers and optimizer state
            slot.trainer.train_step(batch)

    build(base)
    shared = sum(p.numel() for p in base.trainer.shared_params if p.requires_grad)
    tasks = len(base.trainer.model.task_names)
    amp = str(base.trainer.amp_dtype).removeprefix("torch.") if base.trainer.amp_dtype else None
    need = sum(_state_bytes(base.trainer, s) for s in slots)
    resident = need <= RESIDENT_SHARE * _free_bytes(device)
    log(f"{backbone}: {len(slots)} configurations, "
        f"{'all built before timing' if resident else 'rebuilt one at a time per round'} "
        f"(~{need / 2**30:.1f} GiB of state)")
    if resident:
        for slot in slots[1:]:
            log(f"  building {_label(slot)}")
            build(slot)

    order_rng = random.Random(ORDER_SEED)
    for r in range(rounds):
        order = list(slots)
        order_rng.shuffle(order)
        log(f"{backbone} round {r + 1}/{rounds}: {', '.join(_label(s) for s in order)}")
        for slot in order:
            if slot.trainer is None:
                build(slot)
            for _ in range(steps):
                ms, skipped = _step_ms(slot.trainer, batch, device)
                slot.times_ms.append(ms)
                slot.skipped += skipped
            if not resident:
                _drop(slot, device)
    for slot in slots:
        _drop(slot, device)

    baseline_ms = statistics.median(base.times_ms)
    rows = []
    for slot in slots:
        median_ms = statistics.median(slot.times_ms)
        ratio = median_ms / baseline_ms
        target = _target(slot)
        rows.append({
            "backbone": backbone, "method": slot.method, "mode": slot.mode,
            "kind": slot.kind, "gram_based": slot.gram_based,
            "median_ms": median_ms, "ratio": ratio, "steps": len(slot.times_ms),
            # Every timed step in run order: the spread shows how noisy the machine was.
            "times_ms": slot.times_ms, "skipped": slot.skipped, "target": target,
            "ok": None if target is None else ratio <= target,
        })
    info = {"backbone": backbone, "tasks": tasks, "shared_params": shared, "amp": amp,
            "resident": resident}
    return rows, info


def run_balancing_benchmark(
    methods: Sequence[str] | str | None = None,
    modes: Sequence[str] | str = MODES,
    backbones: Sequence[str] | str = ("resnet18",),
    batch: int = 8,
    image_size: int = 128,
    rounds: int = 5,
    steps_per_round: int = 3,
    warmup: int = 2,
    device: str = "auto",
    out: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one training step of every (backbone, method, mode); see the module docstring.

    ``methods``: balancer names (default: every registered one; ``fixed`` is always added).
    ``config``: the model/training config (default ``configs/demo.yaml``); its data section is
    replaced by a small generated shapes set of ``batch`` images at ``image_size``. ``log``
    receives a line per phase. Returns a JSON-serialisable dict (device, versions, settings,
    one row per configuration, the Gram kernel records or None off CUDA), also written
    atomically to ``out`` when given. An unknown method, mode or backbone, an unusable device
    or an unwritable ``out`` is a ``ConfigError``.
    """
    names = _resolve_methods(methods)
    mode_list = _resolve_modes(modes)
    backbone_list = _resolve_backbones(backbones)
    _check_sizes(batch, image_size, rounds, steps_per_round, warmup)
    config_path = resolve_config(config if config is not None else DEFAULT_CONFIG)
    dev = start_run(device, out)
    say = log or (lambda line: None)

    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    gram: list[dict[str, Any]] | None = [] if dev.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="mtvision-balancing-") as tmp:
        from mtvision.data.synthetic import generate_shapes

        data_root = generate_shapes(Path(tmp) / "shapes", num_train=batch, num_val=1,
                                    image_size=image_size, seed=0)
        for backbone in backbone_list:
            b_rows, info = _run_backbone(backbone, names, mode_list, config_path, data_root,
                                         Path(tmp) / "runs", batch, image_size, rounds,
                                         steps_per_round, warmup, dev, say)
            rows += b_rows
            models.append(info)
            if gram is not None:
                say(f"{backbone}: Gram kernel, T={info['tasks']}, P={info['shared_params']}")
                gram += [{"backbone": backbone, **rec}
                         for rec in _time_gram(info["shared_params"], info["tasks"], dev)]

    results = {
        "benchmark": "balancing",
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "settings": {
            "config": str(config_path), "methods": names, "modes": mode_list,
            "backbones": backbone_list, "batch": batch, "image_size": image_size,
            "rounds": rounds, "steps_per_round": steps_per_round, "warmup": warmup,
            "order_seed": ORDER_SEED,
        },
        "models": models,
        "baseline": BASELINE,
        "aim": AIM,
        "targets": {"feature_gram_based": FEATURE_TARGET, "param": PARAM_TARGET},
        "rows": rows,
        "gram": gram,
        "note": None if gram is not None else GRAM_NOTE,
    }
    write_results(results, out)
    return results


# ---------------------------------------------------------------- table
def _aligned(head: Sequence[str], rows: list[tuple[str, ...]], text_cols: int) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    # Text columns left-aligned, numbers right-aligned.
    align = ["<"] * text_cols + [">"] * (len(head) - text_cols)

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, align, widths, strict=True)
        return "  ".join(f"{c:{a}{w}}" for c, a, w in cols).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_table(results: dict[str, Any]) -> str:
    """The results as text: one row per configuration sorted by backbone, mode and ratio, the
    aim line, then the Gram kernel timings (or the note saying they need CUDA)."""
    s = results["settings"]
    order = {b: i for i, b in enumerate(s["backbones"])}
    rows = sorted(results["rows"],
                  key=lambda r: (order.get(r["backbone"], len(order)), r["mode"] or "", r["ratio"]))
    body = []
    for r in rows:
        aim = "-" if r["target"] is None else (
            f"<= {r['target']:g}x {'ok' if r['ok'] else 'over'}")
        spread = f"{min(r['times_ms']):.1f}-{max(r['times_ms']):.1f}"
        body.append((r["backbone"], r["method"], r["mode"] or "-", f"{r['median_ms']:.1f}",
                     spread, f"{r['ratio']:.2f}", str(r["steps"]), aim))
    amp = {m["backbone"]: m["amp"] for m in results["models"]}
    amp_text = ", ".join(f"{b} {a or 'float32'}" for b, a in amp.items())
    title = (f"balancing, one training step (forward + balanced backward + optimizer step) on "
             f"{results['device']}; torch {results['torch']}; batch {s['batch']} at "
             f"{s['image_size']}x{s['image_size']}, {s['rounds']} rounds x "
             f"{s['steps_per_round']} steps (median), interleaved; precision: {amp_text}")
    lines = [title]
    lines += _aligned(("backbone", "method", "mode", "ms", "min-max ms", "ratio", "steps",
                       "aim"), body, 3)
    lines.append(f"ratio = median step time / {results['baseline']}'s; {results['aim']}")
    skipped = [f"{r['method']}/{r['mode'] or '-'}" for r in rows if r["skipped"]]
    if skipped:
        lines.append(f"some timed steps were skipped (non-finite loss or gradient): "
                     f"{', '.join(skipped)}")
    if results["gram"]:
        lines.append("")
        lines.append("Gram matrix G G^T of the task gradients (G read once):")
        gram_rows = [(g["backbone"], f"{g['T']}x{g['P']}", g["dtype"], f"{g['gram_ms']:.3f}",
                      f"{g['matmul_ms']:.3f}", f"{g['speedup']:.2f}", f"{g['gram_gbps']:.0f}",
                      f"{g['matmul_gbps']:.0f}") for g in results["gram"]]
        lines += _aligned(("backbone", "G", "dtype", "gram ms", "G@G.T ms", "speedup",
                           "gram GB/s", "G@G.T GB/s"), gram_rows, 3)
    if results.get("note"):
        lines.append(results["note"])
    return "\n".join(lines)
