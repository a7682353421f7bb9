"""Speed and memory of the fused Triton losses in ``kernels/`` against plain PyTorch.

Every case times one training step of the loss, forward and backward, for two callables on the
same inputs: the fused kernel (``backend="triton"``) and what a user writes without it (the
PyTorch function named in the case's ``reference``). On CUDA both are timed with
``triton.testing.do_bench`` (median, L2 cache cleared between calls) and their peak memory is
measured above what the inputs hold; achieved bandwidth is the case's minimal bytes (see
``minimal_bytes``) over the time. On the CPU only the reference is timed (median of
``time.perf_counter`` runs) and the Triton fields are ``None``: the kernels run on the CPU only
through Triton's interpreter, whose timings mean nothing.

Cases (``quick`` shapes in brackets, small enough for a test):

    seg_ce_fp32, seg_ce_bf16             seg_cross_entropy, logits [8, 21, 512, 512]
                                         ([2, 5, 32, 32]), int64 targets, 5% ignored (255)
    seg_ce_wide_fp32, seg_ce_wide_bf16   the same with 150 classes ([2, 70, 32, 32]): more
                                         than one register tile holds (the class loop)
    edge_bce                             edge_bce, class-balanced, [8, 1, 512, 512]
    focal                                sigmoid_focal_loss, reduction="sum", detection-like
                                         [8, 16384+4096+1024+256+64, 80] one-hot targets
    dense_losses                         dense_losses: seg [8, 21, 512, 512] + 6 edge maps
                                         [8, 6, 512, 512] in one launch, against the single
                                         reference losses called one by one
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from mtvision.benchmarks.common import device_name, start_run, triton_version, write_results
from mtvision.kernels import dense_losses, seg_cross_entropy, sigmoid_focal_loss
from mtvision.kernels.balanced_bce import edge_bce, edge_bce_reference
from mtvision.registry import ConfigError, closest

IGNORE = 255
MIB = 2**20
LOSS_BYTES = 4  # each loss value is one float32
# A CPU case still gets this many timed runs when one run outlasts the repetition budget.
MIN_CPU_RUNS = 3
CPU_NOTE = "Triton figures need a CUDA device: only the PyTorch reference was timed."
BYTES_DEFINITION = ("minimal bytes a fused kernel moves for forward + backward: read logits, "
                    "read targets, write the logits' gradient, write the float32 losses")
CASES = ("seg_ce_fp32", "seg_ce_bf16", "seg_ce_wide_fp32", "seg_ce_wide_bf16", "edge_bce",
         "focal", "dense_losses")


def minimal_bytes(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                  loss_values: int, train: bool = True) -> int:
    """The fewest bytes a fused loss kernel must move between memory and the chip::

        sum over logits   numel * element_size * (2 if train else 1)   (read; write the gradient,
                                                                         same shape and dtype)
      + sum over targets  numel * element_size                         (read; int64 class ids,
                                                                         or float one-hot rows)
      + 4 * loss_values                                                (float32 results)

    Anything more (log-probabilities written and read back, a float32 copy of bf16 logits, a
    one-hot gradient) is traffic that fusion exists to avoid, so ``bytes / time`` is the
    bandwidth a case achieves relative to the ideal.
    """
    per_logit = 2 if train else 1
    total = sum(x.numel() * x.element_size() * per_logit for x in logits)
    total += sum(t.numel() * t.element_size() for t in targets)
    return total + LOSS_BYTES * loss_values


@dataclass
class PreparedCase:
    """One case's inputs, wrapped in its two forward + backward callables, each returning the
    gradients of the logits: ``fused`` (the Triton kernel) and ``plain`` (PyTorch)."""

    kind: str
    reference: str
    shape: dict[str, list[int]]
    dtype: str
    bytes: int
    fused: Callable[[], object]
    plain: Callable[[], object]


@dataclass(frozen=True)
class _Sizes:
    n: int
    hw: int
    classes: int
    wide_classes: int
    edge_maps: int
    det_classes: int
    strides: tuple[int, ...] = (4, 8, 16, 32, 64)

    @property
    def det_points(self) -> int:
        # One anchor point per cell of each FPN level, as the FCOS head places them.
        return sum(max(1, self.hw // s) ** 2 for s in self.strides)


FULL = _Sizes(n=8, hw=512, classes=21, wide_classes=150, edge_maps=6, det_classes=80)
# 70 classes > kernels.cross_entropy.SINGLE_TILE_CLASSES, so a quick GPU run still covers the
# class loop of the wide cases.
QUICK = _Sizes(n=2, hw=32, classes=5, wide_classes=70, edge_maps=6, det_classes=5)


def _step(loss_fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]
          ) -> Callable[[], object]:
    """Forward and backward; ``autograd.grad`` returns fresh gradients, so nothing accumulates
    in ``.grad`` between timed calls."""
    return lambda: torch.autograd.grad(loss_fn(), inputs)


def _logits(shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device,
            gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=dev, dtype=dtype).requires_grad_()


def _class_targets(shape: tuple[int, ...], classes: int, dev: torch.device,
                   gen: torch.Generator) -> torch.Tensor:
    t = torch.randint(0, classes, shape, generator=gen, device=dev)
    return t.masked_fill_(torch.rand(shape, generator=gen, device=dev) < 0.05, IGNORE)


def _edge_targets(shape: tuple[int, ...], dev: torch.device, gen: torch.Generator
                  ) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, device=dev)
    t = (u < 0.1).long()  # about 10% edge pixels
    return t.masked_fill_(u > 0.98, IGNORE)  # and 2% unlabelled, as in BSDS-style targets


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _seg_ce(wide: bool, dtype: torch.dtype) -> Callable[..., PreparedCase]:
    def build(s: _Sizes, dev: torch.device, gen: torch.Generator) -> PreparedCase:
        classes = s.wide_classes if wide else s.classes
        x = _logits((s.n, classes, s.hw, s.hw), dtype, dev, gen)
        t = _class_targets((s.n, s.hw, s.hw), classes, dev, gen)
        return PreparedCase(
            "seg_cross_entropy", "F.cross_entropy(logits.float(), target, ignore_index=255)",
            {"logits": list(x.shape), "target": list(t.shape)}, _dtype_name(dtype),
            minimal_bytes([x], [t], 1),
            _step(lambda: seg_cross_entropy(x, t, ignore_index=IGNORE, backend="triton"), [x]),
            _step(lambda: F.cross_entropy(x.float(), t, ignore_index=IGNORE), [x]),
        )
    return build


def _edge(s: _Sizes, dev: torch.device, gen: torch.Generator) -> PreparedCase:
    x = _logits((s.n, 1, s.hw, s.hw), torch.float32, dev, gen)
    t = _edge_targets((s.n, s.hw, s.hw), dev, gen)
    return PreparedCase(
        "edge_bce", "kernels.balanced_bce.edge_bce_reference (BCE-with-logits, HED weights)",
        {"logits": list(x.shape), "target": list(t.shape)}, "float32",
        minimal_bytes([x], [t], 1),
        _step(lambda: edge_bce(x, t, ignore_index=IGNORE, backend="triton"), [x]),
        _step(lambda: edge_bce_reference(x, t, ignore_index=IGNORE), [x]),
    )


def _focal(s: _Sizes, dev: torch.device, gen: torch.Generator) -> PreparedCase:
    c = s.det_classes
    x = _logits((s.n, s.det_points, c), torch.float32, dev, gen)
    shape = (s.n, s.det_points)
    fg = torch.rand(shape, generator=gen, device=dev) < 0.1  # most points are background
    labels = torch.where(fg, torch.randint(0, c, shape, generator=gen, device=dev), c)
    t = F.one_hot(labels, c + 1)[..., :c].to(x.dtype)  # as the FCOS head builds them
    return PreparedCase(
        "sigmoid_focal_loss", "torchvision.ops.sigmoid_focal_loss(..., reduction='sum')",
        {"logits": list(x.shape), "target": list(t.shape)}, "float32",
        minimal_bytes([x], [t], 1),
        _step(lambda: sigmoid_focal_loss(x, t, reduction="sum", backend="triton"), [x]),
        _step(lambda: tv_focal(x, t, reduction="sum"), [x]),
    )


def _dense(s: _Sizes, dev: torch.device, gen: torch.Generator) -> PreparedCase:
    seg = _logits((s.n, s.classes, s.hw, s.hw), torch.float32, dev, gen)
    seg_t = _class_targets((s.n, s.hw, s.hw), s.classes, dev, gen)
    edge = _logits((s.n, s.edge_maps, s.hw, s.hw), torch.float32, dev, gen)
    edge_t = _edge_targets((s.n, s.hw, s.hw), dev, gen)

    def fused() -> torch.Tensor:
        seg_loss, edge_loss = dense_losses(seg, seg_t, edge, edge_t, backend="triton")
        return seg_loss + edge_loss.sum()

    def separate() -> torch.Tensor:
        loss = F.cross_entropy(seg.float(), seg_t, ignore_index=IGNORE)
        for k in range(edge.shape[1]):
            loss = loss + edge_bce_reference(edge[:, k], edge_t, ignore_index=IGNORE)
        return loss

    return PreparedCase(
        "dense_losses", "F.cross_entropy + edge_bce_reference once per edge map",
        {"seg_logits": list(seg.shape), "seg_target": list(seg_t.shape),
         "edge_logits": list(edge.shape), "edge_target": list(edge_t.shape)}, "float32",
        minimal_bytes([seg, edge], [seg_t, edge_t], 1 + s.edge_maps),
        _step(fused, [seg, edge]), _step(separate, [seg, edge]),
    )


_BUILDERS: dict[str, Callable[[_Sizes, torch.device, torch.Generator], PreparedCase]] = {
    "seg_ce_fp32": _seg_ce(False, torch.float32),
    "seg_ce_bf16": _seg_ce(False, torch.bfloat16),
    "seg_ce_wide_fp32": _seg_ce(True, torch.float32),
    "seg_ce_wide_bf16": _seg_ce(True, torch.bfloat16),
    "edge_bce": _edge,
    "focal": _focal,
    "dense_losses": _dense,
}


# ---------------------------------------------------------------- timing
def time_cpu(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> float:
    """Median milliseconds of ``fn`` on the CPU, spending budgets as ``do_bench`` does: one call
    estimates the time, warm-up calls fill ``warmup_ms``, timed calls fill ``rep_ms`` (at least
    ``MIN_CPU_RUNS`` of them, so a slow case costs a few runs rather than a fixed count)."""
    start = time.perf_counter()
    fn()
    estimate = max((time.perf_counter() - start) * 1e3, 1e-3)
    for _ in range(int(warmup_ms / estimate) - 1):  # the estimating call was the first
        fn()
    times = []
    for _ in range(max(MIN_CPU_RUNS, int(rep_ms / estimate))):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_cuda(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> float:
    """Median milliseconds of ``fn`` on the current CUDA device (``triton.testing.do_bench``)."""
    import triton.testing  # here: the inference benchmark times CPUs without Triton too

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def peak_mib_cuda(fn: Callable[[], object], dev: torch.device) -> float:
    """Peak CUDA memory of one call of ``fn`` above what was allocated before it (the inputs)."""
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize(dev)
    return (torch.cuda.max_memory_allocated(dev) - base) / MIB


# ---------------------------------------------------------------- driver
def _gbps(nbytes: int, ms: float | None) -> float | None:
    return None if ms is None else nbytes / (ms * 1e-3) / 1e9


def prepare_case(name: str, quick: bool = False, device: str | torch.device = "cpu",
                 seed: int = 0) -> PreparedCase:
    """The inputs and callables of case ``name`` (one of ``CASES``) on ``device``."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    return _BUILDERS[_resolve_cases([name])[0]](QUICK if quick else FULL, dev, gen)


def _run_case(name: str, quick: bool, dev: torch.device, warmup_ms: float, rep_ms: float
              ) -> dict[str, Any]:
    p = prepare_case(name, quick, dev)
    triton_ms = triton_peak = torch_peak = None
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            triton_ms = time_cuda(p.fused, warmup_ms, rep_ms)
            torch_ms = time_cuda(p.plain, warmup_ms, rep_ms)
            triton_peak = peak_mib_cuda(p.fused, dev)
            torch_peak = peak_mib_cuda(p.plain, dev)
    else:
        torch_ms = time_cpu(p.plain, warmup_ms, rep_ms)
    return {
        "name": name,
        "kind": p.kind,
        "reference": p.reference,
        "shape": p.shape,
        "dtype": p.dtype,
        "bytes": p.bytes,
        "triton_ms": triton_ms,
        "torch_ms": torch_ms,
        "triton_gbps": _gbps(p.bytes, triton_ms),
        "torch_gbps": _gbps(p.bytes, torch_ms),
        "triton_peak_mib": triton_peak,
        "torch_peak_mib": torch_peak,
        "speedup": None if triton_ms is None else torch_ms / triton_ms,
    }


def _resolve_cases(cases: Sequence[str] | None) -> list[str]:
    if cases is None:
        return list(CASES)
    if isinstance(cases, str):
        cases = [cases]
    for name in cases:
        if name not in CASES:
            raise ConfigError(f"unknown kernel benchmark case '{name}'{closest(name, list(CASES))}"
                              f"; cases: {', '.join(CASES)}")
    return list(dict.fromkeys(cases))


def run_kernel_benchmark(
    cases: Sequence[str] | None = None,
    device: str = "auto",
    quick: bool = False,
    out: str | os.PathLike[str] | None = None,
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``cases`` (default: all of ``CASES``) forward + backward on ``device``.

    ``warmup_ms`` and ``rep_ms`` are time budgets, as in ``triton.testing.do_bench``. ``quick``
    uses tiny shapes. ``log`` receives one line per case as it starts. Returns a
    JSON-serialisable dict (device, versions, settings, one record per case), also written
    atomically to ``out`` when given. An unknown case, an unusable device or an unwritable
    ``out`` is a ``ConfigError``.
    """
    names = _resolve_cases(cases)
    if warmup_ms < 0 or rep_ms <= 0:
        raise ConfigError(f"warmup must be >= 0 and rep > 0 ms, got {warmup_ms} and {rep_ms}")
    dev = start_run(device, out)
    records = []
    for i, name in enumerate(names, 1):
        if log is not None:
            log(f"[{i}/{len(names)}] {name}")
        records.append(_run_case(name, quick, dev, warmup_ms, rep_ms))
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # the next case's inputs may be larger than this one's
    results = {
        "benchmark": "kernels",
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "triton": triton_version(),
        "quick": quick,
        "warmup_ms": warmup_ms,
        "rep_ms": rep_ms,
        "bytes_definition": BYTES_DEFINITION,
        "note": None if dev.type == "cuda" else CPU_NOTE,
        "cases": records,
    }
    write_results(results, out)
    return results


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(results: dict[str, Any]) -> str:
    """The results as a text table, one row per case, with the device and versions above and
    the note (if any) below."""
    head = ("case", "logits shape", "dtype", "MB", "torch ms", "triton ms", "speedup",
            "torch GB/s", "triton GB/s", "torch MiB", "triton MiB")
    rows = []
    for c in results["cases"]:
        shape = " + ".join("x".join(map(str, v)) for k, v in c["shape"].items()
                           if k.endswith("logits"))
        rows.append((
            c["name"], shape, c["dtype"], f"{c['bytes'] / 1e6:.1f}",
            _fmt(c["torch_ms"], ".3f"), _fmt(c["triton_ms"], ".3f"), _fmt(c["speedup"], ".2f"),
            _fmt(c["torch_gbps"], ".1f"), _fmt(c["triton_gbps"], ".1f"),
            _fmt(c["torch_peak_mib"], ".1f"), _fmt(c["triton_peak_mib"], ".1f"),
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    # Text columns left-aligned, numbers right-aligned.
    align = ["<", "<", "<"] + [">"] * (len(head) - 3)

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, align, widths, strict=True)
        return "  ".join(f"{c:{a}{w}}" for c, a, w in cols).rstrip()

    title = (f"kernels, forward + backward, on {results['device']}; torch {results['torch']}, "
             f"triton {results['triton']}{'; quick shapes' if results['quick'] else ''}")
    lines = [title, line(head), line(["-" * w for w in widths])]
    lines += [line(r) for r in rows]
    if results.get("note"):
        lines.append(results["note"])
    return "\n".join(lines)
