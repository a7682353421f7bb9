"""Benchmarks: mtvision benchmark COMMAND [options] (or python tools/benchmark.py ...)

    mtvision benchmark kernels [--quick] [--device D] [--out FILE.json]
    mtvision benchmark balancing [--methods a,b] [--modes param,feature]
                                 [--backbones resnet18,resnet50] [--device D] [...]
    mtvision benchmark inference [--config C] [-o key=value] [--batch N]
                                 [--image-size PX] [--rounds R] [--device D] [...]
    mtvision benchmark train-step [--config C] [-o key=value] [--batch N] [--compile]
                                  [--image-size PX] [--rounds R] [--device D] [...]
    mtvision benchmark edge-eval [--data DIR] [--images N] [--reference-images M]
                                 [--reseeds R] [--workers W] [--preds DIR]
                                 [--reference-cache DIR] [...]
    mtvision benchmark data [--image-sizes 128,512] [--workers 0,1,2] [--batch N] [...]
    mtvision benchmark gpu-check [--out DIR]

kernels: the fused Triton losses against plain PyTorch, forward + backward (time, achieved
GB/s, peak memory); on the CPU only the PyTorch side is timed.
balancing: one training step of the demo model with each balancing method, as a ratio to
equal weighting (interleaved rounds, medians); on CUDA also the Gram kernel against G @ G.T.
inference: the multi-task model of a config against one model per head with the same backbone
(latency, images/s, the ratio multi-task / sum of single-task); on CUDA also under AMP.
train-step: the demo model's training step split into data loading, forward, losses, backward
and optimizer, next to a minimal hand-written PyTorch loop on the same model and batch
(interleaved rounds, medians), as a ratio.
edge-eval: the exact BSDS edge benchmark with the optimal matcher against pyEdgeEval's CSA on
the same BSDS500 images, thresholds and annotators (CSA once per seed): ODS/OIS/AP, wall and
CPU time, their ratio.
data: images/s of the training input pipeline alone (no model), per image size and worker count.
gpu-check: on a CUDA machine, the cuda tests, a 300-iteration AMP demo and the kernel and
balancing benchmarks, one report (`make gpu-check`); elsewhere one line, exit 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mtvision.cli import run_cli


def _number(kind: type, minimum: float, strict: bool = False):
    """An argparse type: ``kind`` (int or float) >= ``minimum`` (> when ``strict``)."""

    def parse(text: str):
        value = kind(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, "
                                             f"got {value}")
        return value

    return parse


_non_negative_ms = _number(float, 0)
_positive_ms = _number(float, 0, strict=True)
_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)


def _names(text: str) -> list[str]:
    """A comma-separated list; the library checks the names (with a 'did you mean')."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _run_kernels(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.kernels import format_table, run_kernel_benchmark

    res = run_kernel_benchmark(a.case, a.device, a.quick, a.out, a.warmup, a.rep,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_kernels(sub: argparse._SubParsersAction) -> None:
    from mtvision.benchmarks.kernels import CASES

    p = sub.add_parser("kernels", help="fused Triton losses against plain PyTorch",
                       description="Time the fused Triton losses and their plain-PyTorch "
                                   "equivalents, forward + backward.")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes: a check, not a benchmark")
    p.add_argument("--out", default="runs/benchmark/kernels.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/kernels.json)")
    p.add_argument("--warmup", type=_non_negative_ms, default=25.0, metavar="MS",
                   help="warm-up time per callable in ms (default 25)")
    p.add_argument("--rep", type=_positive_ms, default=100.0, metavar="MS",
                   help="timed repetitions per callable in ms (default 100; on the CPU at "
                        "least 3 runs)")
    p.add_argument("--case", action="append", choices=CASES, default=None,
                   help="run only this case (repeatable; default: all)")
    p.set_defaults(run=_run_kernels)


def _run_balancing(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.balancing import format_table, run_balancing_benchmark

    res = run_balancing_benchmark(a.methods, a.modes, a.backbones, a.batch, a.image_size,
                                  a.rounds, a.steps, a.warmup, a.device, a.out, a.config,
                                  log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_balancing(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("balancing", help="step time of each balancing method against equal "
                                         "weighting",
                       description="Time one training step of the demo model with each "
                                   "balancing method (gradient methods in each mode), "
                                   "interleaved in rounds, as a ratio to equal weighting.")
    p.add_argument("--methods", type=_names, default=None, metavar="A,B,...",
                   help="balancer names (default: every registered one; fixed always runs, "
                        "as the baseline)")
    p.add_argument("--modes", type=_names, default=["param", "feature"], metavar="M,...",
                   help="modes of the gradient methods (default: param,feature)")
    p.add_argument("--backbones", type=_names, default=["resnet18"], metavar="B,...",
                   help="backbones of the demo model (default: resnet18; e.g. "
                        "resnet18,resnet50)")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--image-size", type=_positive_int, default=128, metavar="PX",
                   help="square image side, a multiple of 32 (default 128)")
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="interleaved rounds (default 5)")
    p.add_argument("--steps", type=_positive_int, default=3,
                   help="timed steps per configuration and round (default 3)")
    p.add_argument("--warmup", type=_non_negative_int, default=2,
                   help="untimed steps per configuration after building it (default 2)")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="model/training config, a file or a shipped name (default: demo)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--out", default="runs/benchmark/balancing.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/balancing.json)")
    p.set_defaults(run=_run_balancing)


def _run_inference(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.inference import format_table, run_inference_benchmark

    res = run_inference_benchmark(a.config, a.override, a.batch, (a.image_size, a.image_size),
                                  a.rounds, a.warmup, a.rep, a.device, a.out,
                                  log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inference", help="a multi-task model against its single-task models",
                       description="Latency and images/s of the multi-task model of a config "
                                   "and of one model per head with the same backbone "
                                   "(forward + post-processing), interleaved in rounds; the "
                                   "ratio multi-task / sum of single-task.")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="model config, a file or a shipped name (default: demo, the 4-task demo "
                        "model)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. -o model.backbone.name=resnet50")
    p.add_argument("--batch", type=_positive_int, default=1, help="images per call (default 1)")
    p.add_argument("--image-size", type=_positive_int, default=128, metavar="PX",
                   help="square image side, a multiple of 32 (default 128)")
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="interleaved rounds (default 5)")
    p.add_argument("--warmup", type=_non_negative_ms, default=50.0, metavar="MS",
                   help="warm-up time per model and round in ms (default 50)")
    p.add_argument("--rep", type=_positive_ms, default=200.0, metavar="MS",
                   help="timed time per model and round in ms (default 200; at least 3 runs)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--out", default="runs/benchmark/inference.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/inference.json)")
    p.set_defaults(run=_run_inference)


def _ints(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got "
                                         f"{text!r}") from None


def _run_data(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.data import format_table, run_data_benchmark

    res = run_data_benchmark(a.config, a.image_sizes, a.workers, a.batch, a.batches, a.warmup,
                             a.rounds, a.out,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="images/s of the training input pipeline alone",
                       description="Read the demo's training pipeline (generated shapes, its "
                                   "transforms, the trainer's loader) at each image size with "
                                   "each number of workers, without a model; interleaved "
                                   "rounds, medians.")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="config whose data pipeline is read (default: demo)")
    p.add_argument("--image-sizes", type=_ints, default=[128, 512], metavar="PX,...",
                   help="square image sides (default: 128,512)")
    p.add_argument("--workers", type=_ints, default=[0, 1, 2], metavar="N,...",
                   help="loader worker counts (default: 0,1,2)")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per batch (default 8)")
    p.add_argument("--batches", type=_positive_int, default=10,
                   help="timed batches per configuration and round (default 10)")
    p.add_argument("--warmup", type=_non_negative_int, default=2,
                   help="untimed batches per configuration and round (default 2)")
    p.add_argument("--rounds", type=_positive_int, default=3,
                   help="interleaved rounds (default 3)")
    p.add_argument("--out", default="runs/benchmark/data.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/data.json)")
    p.set_defaults(run=_run_data)


def _run_gpu_check(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.gpu_check import run_gpu_check

    report = run_gpu_check(a.out)
    if report is not None and not report["ok"]:
        raise SystemExit(1)


def _add_gpu_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu-check", help="prove the GPU path (make gpu-check)",
                       description="On a CUDA machine: pytest -m cuda, a 300-iteration AMP "
                                   "demo with its evaluation, the kernel and balancing "
                                   "benchmarks, one JSON report. Without CUDA: one line, exit 0.")
    p.add_argument("--out", default="runs/gpu-check", metavar="DIR",
                   help="report folder (default: runs/gpu-check)")
    p.set_defaults(run=_run_gpu_check)


def _run_train_step(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.train_step import format_table, run_train_step_benchmark

    res = run_train_step_benchmark(a.config, a.override, a.batch, a.image_size, a.rounds,
                                   a.steps, a.warmup, a.device, a.out,
                                   log=lambda line: print(line, file=sys.stderr, flush=True),
                                   compare_compile=a.compile)
    print(format_table(res))
    print(f"results: {a.out}")


def _add_train_step(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-step", help="the training step by phase against a minimal loop",
                       description="Time the demo model's training step (data loading, "
                                   "forward, losses, backward, optimizer) in the trainer and in "
                                   "a minimal hand-written PyTorch loop on the same model and "
                                   "batch, interleaved in rounds; the ratio trainer / minimal.")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="model/training config (default: configs/demo.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. -o train.channels_last=true")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--image-size", type=_positive_int, default=128, metavar="PX",
                   help="square image side, a multiple of 32 (default 128)")
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="interleaved rounds (default 5)")
    p.add_argument("--steps", type=_positive_int, default=5,
                   help="timed steps per contender and round (default 5)")
    p.add_argument("--warmup", type=_non_negative_int, default=3,
                   help="untimed steps per contender before timing (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--out", default="runs/benchmark/train_step.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/train_step.json)")
    p.add_argument("--compile", action="store_true",
                   help="also time the trainer with train.compile on (the compiled / eager "
                        "step-time ratio; the first step compiles, untimed)")
    p.set_defaults(run=_run_train_step)


def _run_edge_eval(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.edge_eval import format_table, run_edge_eval_benchmark

    res = run_edge_eval_benchmark(a.data, a.split, a.images, a.reference_images, a.reseeds,
                                  a.thresholds, a.max_dist, not a.no_nms, a.workers, a.preds,
                                  a.out, a.reference_cache,
                                  log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_edge_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edge-eval", help="exact BSDS edge benchmark: optimal matcher vs CSA",
                       description="Score BSDS500 images with the exact edge benchmark, with "
                                   "the optimal matcher and with pyEdgeEval's CSA (once per "
                                   "seed), side by side: ODS/OIS/AP, wall and CPU time.")
    # The shared samples beside a checkout (../shared/data), or $MTV_SHARED_DATA.
    shared = os.environ.get("MTV_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared"
                            / "data")
    p.add_argument("--data", default=str(Path(shared) / "bsds500"), metavar="DIR",
                   help="BSDS500 root (default: $MTV_SHARED_DATA/bsds500, "
                        "$MTV_SHARED_DATA defaulting to ../shared/data)")
    p.add_argument("--split", default="test", help="split (default: test)")
    p.add_argument("--images", type=_positive_int, default=100,
                   help="first N images of the split (default 100)")
    p.add_argument("--reference-images", type=_positive_int, default=None, metavar="M",
                   help="score only M of them with both matchers, spread over the N "
                        "(default: all)")
    p.add_argument("--reseeds", type=_positive_int, default=3,
                   help="CSA runs, one per seed of its outlier graph (default 3)")
    p.add_argument("--thresholds", type=_positive_int, default=99, help="(default 99)")
    p.add_argument("--max-dist", type=_number(float, 0, strict=True), default=0.0075,
                   help="tolerance, fraction of the diagonal (default 0.0075)")
    p.add_argument("--no-nms", action="store_true", help="score the maps without edge NMS")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes for both matchers (default: the CPU count)")
    p.add_argument("--preds", default=None, metavar="DIR",
                   help="PNG predictions DIR/<id>.png (default: a gradient edge detector)")
    p.add_argument("--out", default="runs/benchmark/edge_eval.json", metavar="FILE.json",
                   help="results JSON (default: runs/benchmark/edge_eval.json)")
    p.add_argument("--reference-cache", default=None, metavar="DIR",
                   help="per-image CSA counts, read back by a rerun: a stopped run resumes "
                        "and reseeds add up (default: the --out path with .cache)")
    p.set_defaults(run=_run_edge_eval)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One function per subcommand; a new benchmark adds its own here.
    _add_kernels(sub)
    _add_balancing(sub)
    _add_inference(sub)
    _add_train_step(sub)
    _add_edge_eval(sub)
    _add_data(sub)
    _add_gpu_check(sub)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad option, device or output file)."""
    a = build_parser(prog).parse_args(argv)
    return run_cli(lambda: a.run(a))

