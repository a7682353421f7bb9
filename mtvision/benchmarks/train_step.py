"""Where one training step of the demo model spends its time, against a minimal PyTorch loop.

Two contenders train the same model (the config's model, built twice from the same seed so
both start from the same weights) on the same fixed batch of the built-in shapes data:

- ``trainer``: ``Trainer.train_step`` followed by the scheduler step, i.e. what
  ``Trainer.fit`` does per iteration, with the config's balancer (``fixed``: equal weighting).
- ``minimal``: a hand-written loop: ``extract`` + ``forward_heads``, ``model.losses``, the
  plain sum of every loss component, ``zero_grad`` + ``backward``, ``AdamW.step``; the same
  precision (autocast) and memory format as the trainer, nothing else.
- ``compiled`` (with ``compare_compile``): the trainer again, built with ``train.compile`` on and
  the same starting weights, so the compiled / eager step-time ratio is measured side by side.
  Its first warm-up step compiles (untimed).

Each step is split into phases: ``data`` (the next batch from the contender's loader: the
trainer's own loader, and a plain ``DataLoader`` over the same dataset with the same collate;
the loaded batch is dropped so that both compute on the one fixed batch), ``forward``,
``losses``, ``backward``, ``optimizer`` and, for the trainer, ``other``: the step's wall time
not spent in those calls (its bookkeeping: presence checks, the gradient norm, the scaler,
the returned statistics, the scheduler). The trainer's phases are measured by timing wrappers
around ``model.extract``/``forward_heads``, ``model.losses``, ``balancer.backward`` and
``optimizer.step`` on the instance; on CUDA every phase boundary synchronises, in both
contenders alike.

Drift: the contenders are interleaved. Round r runs ``steps_per_round`` timed steps of each in
an order shuffled per round with a fixed seed; a phase's figure is the median over all timed
steps, the ratio the trainer's median step over the minimal loop's (and ``compile_ratio`` the
compiled trainer's over the eager trainer's).
"""

from __future__ import annotations

import functools
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mtvision.benchmarks.common import device_name, start_run, write_results
from mtvision.registry import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
PHASES = ("data", "forward", "losses", "backward", "optimizer", "other")
CONTENDERS = ("trainer", "minimal")
ORDER_SEED = 0
TARGET = 1.1
AIM = f"aim: the trainer's step within {TARGET:g}x of the minimal loop (equal weighting)"


class _Clock:
    """Accumulates wall time per phase for the current step (synchronising on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.phases: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its wall time added to ``phase``."""

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - start

        return run


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def _build_trainer(config: Path, overrides: list[str], data_root: Path, work_dir: Path,
                   batch: int, image_size: int, num_train: int, total_steps: int,
                   device: torch.device, weights: dict[str, torch.Tensor] | None = None) -> Any:
    from mtvision.config import load_config
    from mtvision.engine.trainer import Trainer

    cfg = load_config(config, [
        *overrides,
        "data.type=mtvision",
        f"data.root={data_root}",
        # The parameters the data was generated with, so the trainer finds it cached.
        f"data.synthetic={{num_train: {num_train}, num_val: 1, image_size: {image_size}, "
        "seed: 0}",
        f"data.image_size=[{image_size}, {image_size}]",
        f"data.batch_size={batch}",
        f"train.max_iters={total_steps}",
        "train.tensorboard=false",
    ])
    if cfg["balancer"]["name"] != "fixed":
        raise ConfigError(f"the train-step benchmark compares equal weighting; the config's "
                          f"balancer is '{cfg['balancer']['name']}' (use -o balancer.name=fixed)")
    trainer = Trainer(cfg, work_dir, device=str(device), progress=False)
    if weights is not None:
        trainer.model.load_state_dict(weights)
    trainer.model.train()
    return trainer


class _TrainerStep:
    """``Trainer.train_step`` + scheduler step with timing wrappers on the phase calls."""

    def __init__(self, trainer: Any, batch: dict[str, Any], clock: _Clock) -> None:
        self.trainer, self.batch, self.clock = trainer, batch, clock
        model = trainer.model
        model.extract = clock.timed("forward", model.extract)
        model.forward_heads = clock.timed("forward", model.forward_heads)
        model.losses = clock.timed("losses", model.losses)
        trainer.balancer.backward = clock.timed("backward", trainer.balancer.backward)
        trainer.optimizer.step = clock.timed("optimizer", trainer.optimizer.step)
        self.data = _cycle(trainer.train_loader)
        self.first_loss: float | None = None

    def __call__(self) -> None:
        self.clock.timed("data", next)(self.data)
        out = self.trainer.train_step(self.batch)
        self.trainer.scheduler.step()
        if self.first_loss is None and out is not None:
            # Read once (a device sync), outside the timed steps' steady state.
            self.first_loss = sum(float(out[t]) for t in self.trainer.model.task_names
                                  if t in out)


class _MinimalStep:
    """The hand-written loop on its own copy of the model."""

    def __init__(self, trainer: Any, batch: dict[str, Any], clock: _Clock) -> None:
        from mtvision.data.build import move_batch
        from mtvision.models import build_model

        cfg = trainer.cfg
        torch.manual_seed(cfg["train"]["seed"])
        self.model = build_model(cfg["model"]).to(trainer.device)
        self.model.load_state_dict(trainer.model.state_dict())
        self.model.to(memory_format=trainer.memory_format)
        self.model.train()
        opt = cfg["train"]["optimizer"]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt["lr"],
                                           weight_decay=opt["weight_decay"])
        self.device, self.memory_format = trainer.device, trainer.memory_format
        self.amp = trainer.amp_dtype
        self.move = move_batch
        self.batch, self.clock = batch, clock
        loader = trainer.train_loader
        self.data = _cycle(DataLoader(trainer.train_set, batch_size=loader.batch_size,
                                      shuffle=True, num_workers=loader.num_workers,
                                      collate_fn=loader.collate_fn, drop_last=True))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.first_loss: float | None = None

    def __call__(self) -> None:
        clock = self.clock
        clock.timed("data", next)(self.data)
        ctx = (torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext())

        def forward() -> Any:
            b = self.move(self.batch, self.device)
            images = b["images"].contiguous(memory_format=self.memory_format)
            with ctx:
                return self.model.forward_heads(self.model.extract(images),
                                                tuple(images.shape[-2:])), b

        def losses(outputs: Any, b: dict[str, Any]) -> torch.Tensor:
            with ctx:
                comps = self.model.losses(outputs, b["targets"], b["present"])
            return sum(c.float() for parts in comps.values() for c in parts.values())

        def backward(loss: torch.Tensor) -> None:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()

        def step() -> None:
            self.scaler.step(self.optimizer)
            self.scaler.update()

        outputs, b = clock.timed("forward", forward)()
        loss = clock.timed("losses", losses)(outputs, b)
        if self.first_loss is None:
            self.first_loss = float(loss.detach())
        clock.timed("backward", backward)(loss)
        clock.timed("optimizer", step)()


def run_train_step_benchmark(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    batch: int = 8,
    image_size: int = 128,
    rounds: int = 5,
    steps_per_round: int = 5,
    warmup: int = 3,
    device: str = "auto",
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    compare_compile: bool = False,
) -> dict[str, Any]:
    """Time the trainer's step and the minimal loop's, phase by phase; see the module
    docstring. ``config`` (default ``configs/demo.yaml``) gives the model, optimizer, precision
    and memory format, ``overrides`` are ``key=value`` on top; its data section is replaced by
    a generated shapes set of ``batch * 4`` images at ``image_size``. ``compare_compile`` adds
    the ``compiled`` contender (``train.compile: true``). Returns a
    JSON-serialisable dict (device, versions, settings, per-contender phase medians, the
    ratio), also written atomically to ``out`` when given."""
    if batch < 1 or rounds < 1 or steps_per_round < 1 or warmup < 0:
        raise ConfigError(f"batch, rounds and steps must be >= 1 and warmup >= 0, got batch "
                          f"{batch}, rounds {rounds}, steps {steps_per_round}, warmup {warmup}")
    if image_size < 32 or image_size % 32:
        raise ConfigError(f"image size must be a multiple of 32, got {image_size}")
    config_path = Path(config) if config is not None else DEFAULT_CONFIG
    if not config_path.is_file():
        raise ConfigError(f"config file '{config_path}' not found")
    dev = start_run(device, out)
    say = log or (lambda line: None)
    num_train = batch * 4
    total_steps = warmup + rounds * steps_per_round + 1
    contenders_run = (*CONTENDERS, "compiled") if compare_compile else CONTENDERS
    times: dict[str, list[dict[str, float]]] = {c: [] for c in contenders_run}

    with tempfile.TemporaryDirectory(prefix="mtvision-train-step-") as tmp:
        from mtvision.data.build import move_batch
        from mtvision.data.synthetic import generate_shapes

        data_root = generate_shapes(Path(tmp) / "shapes", num_train=num_train, num_val=1,
                                    image_size=image_size, seed=0)
        overrides = list(overrides or [])
        backend = None
        if compare_compile:
            from mtvision.config import load_config
            from mtvision.engine.compile import compile_backend

            # The compiled contender: the config's train.compile backend, inductor where it
            # is off; the eager trainer is then eager whatever the config says.
            backend = compile_backend(load_config(config_path, overrides)["train"]["compile"]
                                      or True)
            compiled_overrides = [*overrides, f"train.compile={backend}"]
            overrides = [*overrides, "train.compile=false"]
        trainer = _build_trainer(config_path, overrides, data_root,
                                 Path(tmp) / "run", batch, image_size, num_train, total_steps,
                                 dev)
        # One batch on the device that every timed step computes on.
        fixed = move_batch(next(iter(trainer.train_loader)), dev)
        clock = _Clock(dev)
        steps = {"minimal": _MinimalStep(trainer, fixed, clock),
                 "trainer": _TrainerStep(trainer, fixed, clock)}
        if compare_compile:
            compiled = _build_trainer(config_path, compiled_overrides,
                                      data_root, Path(tmp) / "run_compiled", batch, image_size,
                                      num_train, total_steps, dev,
                                      weights=trainer.model.state_dict())
            steps["compiled"] = _TrainerStep(compiled, fixed, clock)
        cfg = trainer.cfg
        say(f"warm-up: {warmup} steps each" + (" (the compiled trainer's first compiles)"
                                                 if compare_compile else ""))
        for name in contenders_run:
            for _ in range(max(warmup, 2) if name == "compiled" else warmup):
                steps[name]()
        order_rng = random.Random(ORDER_SEED)
        for r in range(rounds):
            order = list(contenders_run)
            order_rng.shuffle(order)
            say(f"round {r + 1}/{rounds}: {', '.join(order)}")
            for name in order:
                for _ in range(steps_per_round):
                    clock.phases = {}
                    clock.sync()
                    start = time.perf_counter()
                    steps[name]()
                    clock.sync()
                    total = time.perf_counter() - start
                    phases = {p: clock.phases.get(p, 0.0) * 1e3 for p in PHASES[:-1]}
                    phases["other"] = max(total * 1e3 - sum(phases.values()), 0.0)
                    phases["total"] = total * 1e3
                    times[name].append(phases)
        trainer.logger.close()
        if compare_compile:
            compiled.logger.close()

    contenders = {}
    for name in contenders_run:
        rows = times[name]
        contenders[name] = {
            "median_ms": {p: statistics.median(r[p] for r in rows) for p in (*PHASES, "total")},
            "compute_ms": statistics.median(r["total"] - r["data"] for r in rows),
            "total_ms": [r["total"] for r in rows],
        }
    ratio = (contenders["trainer"]["median_ms"]["total"]
             / contenders["minimal"]["median_ms"]["total"])
    compute_ratio = contenders["trainer"]["compute_ms"] / contenders["minimal"]["compute_ms"]
    results = {
        "benchmark": "train-step",
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": {
            "config": str(config_path), "overrides": list(overrides or []), "batch": batch,
            "image_size": image_size, "rounds": rounds, "steps_per_round": steps_per_round,
            "warmup": warmup, "order_seed": ORDER_SEED,
            "amp": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else None,
            "channels_last": bool(cfg["train"]["channels_last"]),
            "num_workers": cfg["data"]["num_workers"],
            "compile_backend": backend,
        },
        "phases": list(PHASES),
        "contenders": contenders,
        # Both start from the same weights on the same batch: their first losses agree when
        # the two steps compute the same thing.
        "first_loss": {name: steps[name].first_loss for name in contenders_run},
        "ratio": ratio,
        "compute_ratio": compute_ratio,
        # torch.compile's step over the eager trainer's (None without ``compare_compile``).
        "compile_ratio": (contenders["compiled"]["median_ms"]["total"]
                          / contenders["trainer"]["median_ms"]["total"]
                          if compare_compile else None),
        "target": TARGET,
        "ok": ratio <= TARGET,
        "aim": AIM,
    }
    write_results(results, out)
    return results


def format_table(results: dict[str, Any]) -> str:
    """Phases as rows, the contenders and their ratios as columns, then the verdict."""
    s = results["settings"]
    c = results["contenders"]
    title = (f"train-step, one training step of the demo model on {results['device']}; torch "
             f"{results['torch']}; batch {s['batch']} at {s['image_size']}x{s['image_size']}, "
             f"{s['rounds']} rounds x {s['steps_per_round']} steps (median ms), interleaved; "
             f"precision {s['amp'] or 'float32'}, "
             f"{'channels-last' if s['channels_last'] else 'contiguous'}")
    comp = c.get("compiled")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "-"

    rows = []
    for p in (*results["phases"], "total"):
        t, m = c["trainer"]["median_ms"][p], c["minimal"]["median_ms"][p]
        row = (p, f"{t:.1f}", f"{m:.1f}", ratio(t, m))
        if comp:
            row += (f"{comp['median_ms'][p]:.1f}", ratio(comp["median_ms"][p], t))
        rows.append(row)
    row = ("step w/o data", f"{c['trainer']['compute_ms']:.1f}",
           f"{c['minimal']['compute_ms']:.1f}", f"{results['compute_ratio']:.2f}")
    if comp:
        row += (f"{comp['compute_ms']:.1f}",
                ratio(comp["compute_ms"], c["trainer"]["compute_ms"]))
    rows.append(row)
    head: tuple[str, ...] = ("phase", "trainer", "minimal", "ratio")
    if comp:
        head += ("compiled", "compiled/eager")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{x:<{w}}" if i == 0 else f"{x:>{w}}"
                         for i, (x, w) in enumerate(zip(cells, widths, strict=True)))

    lines = [title, line(head), line(tuple("-" * w for w in widths)), *map(line, rows)]
    lines.append(f"ratio = trainer / minimal median; total {results['ratio']:.2f}x "
                 f"({'ok' if results['ok'] else 'over'}); {results['aim']}")
    if comp:
        lines.append(f"torch.compile: compiled trainer / eager trainer median step "
                     f"{results['compile_ratio']:.2f}x")
    return "\n".join(lines)
