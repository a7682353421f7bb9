"""Benchmarks: python tools/benchmark.py COMMAND [options]

    python tools/benchmark.py kernels [--quick] [--device D] [--out FILE.json]
    python tools/benchmark.py balancing [--methods a,b] [--modes param,feature]
                                        [--backbones resnet18,resnet50] [--device D] [...]
    python tools/benchmark.py inference [--config C] [-o key=value] [--batch N]
                                        [--image-size PX] [--rounds R] [--device D] [...]
    python tools/benchmark.py edge-eval [--data DIR] [--images N] [--reference-images M]
                                        [--reseeds R] [--workers W] [--preds DIR] [...]

kernels: the fused Triton losses against plain PyTorch, forward + backward (time, achieved
GB/s, peak memory); on the CPU only the PyTorch side is timed.
balancing: one training step of the demo model with each balancing method, as a ratio to
equal weighting (interleaved rounds, medians); on CUDA also the Gram kernel against G @ G.T.
inference: the multi-task model of a config against one model per head with the same backbone
(latency, images/s, the ratio multi-task / sum of single-task); on CUDA also under AMP.
edge-eval: the exact BSDS edge benchmark with the optimal matcher against pyEdgeEval's CSA on
the same BSDS500 images, thresholds and annotators (CSA once per seed): ODS/OIS/AP, wall and
CPU time, their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Lets `python tools/benchmark.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtvision.cli import run_cli  # noqa: E402


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
                   help="model/training config (default: configs/demo.yaml)")
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
                   help="model config (default: configs/demo.yaml, the 4-task demo model)")
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


def _run_edge_eval(a: argparse.Namespace) -> None:
    from mtvision.benchmarks.edge_eval import format_table, run_edge_eval_benchmark

    res = run_edge_eval_benchmark(a.data, a.split, a.images, a.reference_images, a.reseeds,
                                  a.thresholds, a.max_dist, not a.no_nms, a.workers, a.preds,
                                  a.out, log=lambda line: print(line, file=sys.stderr,
                                                                flush=True))
    print(format_table(res))
    print(f"results: {a.out}")


def _add_edge_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edge-eval", help="exact BSDS edge benchmark: optimal matcher vs CSA",
                       description="Score BSDS500 images with the exact edge benchmark, with "
                                   "the optimal matcher and with pyEdgeEval's CSA (once per "
                                   "seed), side by side: ODS/OIS/AP, wall and CPU time.")
    shared = os.environ.get("MTV_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared"
                            / "data")
    p.add_argument("--data", default=str(Path(shared) / "bsds500"), metavar="DIR",
                   help="BSDS500 root (default: $MTV_SHARED_DATA/bsds500, "
                        "$MTV_SHARED_DATA defaulting to ../shared/data)")
    p.add_argument("--split", default="test", help="split (default: test)")
    p.add_argument("--images", type=_positive_int, default=100,
                   help="first N images of the split (default 100)")
    p.add_argument("--reference-images", type=_positive_int, default=None, metavar="M",
                   help="score only the first M of them with both matchers (default: all)")
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
    p.set_defaults(run=_run_edge_eval)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One function per subcommand; a new benchmark adds its own here.
    _add_kernels(sub)
    _add_balancing(sub)
    _add_inference(sub)
    _add_edge_eval(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a bad option, device or output file)."""
    a = build_parser().parse_args(argv)
    return run_cli(lambda: a.run(a))


if __name__ == "__main__":
    sys.exit(main())
