"""``make gpu-check``: one command that proves the GPU path on a CUDA machine.

It runs, in this order, each step timed and its failure recorded rather than fatal:

1. ``pytest -m cuda``: the tests that only a GPU can run (kernels against their references in
   fp32/fp16/bf16, device entry, AMP, sync-free steps, ...);
2. the demo (``configs/demo.yaml``) trained for 300 iterations on the GPU with ``amp: auto``,
   evaluated with the benchmark protocols, and run for inference on images and a video;
3. ``tools/benchmark.py kernels`` (fused Triton losses against PyTorch: time, GB/s, speed-up);
4. ``tools/benchmark.py balancing`` (a step with each balancing method against equal weighting),

and writes one JSON report (``runs/gpu-check/report.json`` by default): device, versions, test
counts, every timing, fused-kernel GB/s and speed-ups, peak memory. About 8 minutes on one
H100-class GPU. Without CUDA it says so in one line and does nothing.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = "gpu-check: no CUDA device on this machine; nothing to check (run it on a GPU machine)"

Step = Callable[[Path], dict[str, Any]]


def versions() -> dict[str, Any]:
    """mtvision, Python, torch, torchvision, triton (or "absent") and CUDA versions."""
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "absent"

    return {"mtvision": version("mtvision"), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": version("torchvision"),
            "triton": version("triton"), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def device_info() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "count": torch.cuda.device_count(),
            "capability": list(torch.cuda.get_device_capability(0)),
            "memory_gib": round(props.total_memory / 2**30, 1)}


def pytest_counts(junit: Path) -> dict[str, int]:
    """passed / failed / errors / skipped of a pytest JUnit XML report."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {k: sum(int(s.get(k, 0)) for s in suites)
             for k in ("tests", "failures", "errors", "skipped")}
    return {"passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
            "failed": total["failures"], "errors": total["errors"],
            "skipped": total["skipped"]}


def run_cuda_tests(out: Path, timeout: int = 240) -> dict[str, Any]:
    junit = out / "pytest-cuda.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    (out / "pytest-cuda.log").write_text(done.stdout + done.stderr)
    result: dict[str, Any] = {"returncode": done.returncode, "log": str(out / "pytest-cuda.log")}
    if junit.is_file():
        result.update(pytest_counts(junit))
    return result


def run_demo_training(out: Path, iters: int = 300) -> dict[str, Any]:
    from mtvision.engine.demo import run_demo

    torch.cuda.reset_peak_memory_stats()
    metrics = run_demo(str(ROOT / "configs" / "demo.yaml"),
                       [f"train.max_iters={iters}", "train.amp=auto",
                        f"work_dir={out / 'demo'}"], device="cuda", progress=False)
    return {"iters": iters, "metrics": metrics,
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def run_kernels(out: Path) -> dict[str, Any]:
    from mtvision.benchmarks.kernels import run_kernel_benchmark

    return run_kernel_benchmark(device="cuda", out=out / "kernels.json")


def run_balancing(out: Path) -> dict[str, Any]:
    from mtvision.benchmarks.balancing import run_balancing_benchmark

    return run_balancing_benchmark(image_size=256, rounds=3, device="cuda",
                                   out=out / "balancing.json")


STEPS: dict[str, Step] = {"cuda_tests": run_cuda_tests, "demo_training": run_demo_training,
                          "kernels": run_kernels, "balancing": run_balancing}


def run_gpu_check(out_dir: str | Path = "runs/gpu-check",
                  log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Run every step on the GPU and write ``out_dir/report.json``; None (and one line) when
    there is no CUDA device. A failing step is recorded with its error, and the others run."""
    from mtvision.data.io import write_json_atomic

    if not torch.cuda.is_available():
        log(NO_CUDA)
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": device_info(), "versions": versions(), "steps": {}}
    t_all = time.perf_counter()
    for name, step in STEPS.items():
        log(f"gpu-check: {name} ...")
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **step(out)}
        except Exception as e:  # noqa: BLE001 - recorded in the report; the next step runs
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        report["steps"][name] = result
        log(f"gpu-check: {name} {'ok' if result['ok'] else 'FAILED'} "
            f"in {result['seconds']:.1f} s")
        write_json_atomic(report, out / "report.json")  # what is done survives a later crash
    report["seconds"] = round(time.perf_counter() - t_all, 2)
    tests = report["steps"]["cuda_tests"]
    report["ok"] = all(s["ok"] for s in report["steps"].values()) and \
        tests.get("returncode") == 0
    write_json_atomic(report, out / "report.json")
    log(f"gpu-check: {'passed' if report['ok'] else 'FAILED'} in {report['seconds']:.0f} s; "
        f"report: {out / 'report.json'}")
    return report
