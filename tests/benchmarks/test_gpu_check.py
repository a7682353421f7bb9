"""``make gpu-check`` without a GPU (one line, exit 0) and its report, with the GPU steps
replaced by stand-ins (the real ones run only on a CUDA machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mtvision.benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message is for CPU machines")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(repo_root, tmp_path):
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--out", str(tmp_path / "g")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == gpu_check.NO_CUDA
    assert not (tmp_path / "g").exists()


def test_the_report_holds_every_step_and_a_failure_does_not_stop_the_rest(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"name": "fake", "count": 1})
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    ran = []

    def step(name, result):
        def run(out):
            ran.append(name)
            if result is None:
                raise RuntimeError("out of memory")
            return result
        return run

    monkeypatch.setattr(gpu_check, "STEPS", {
        "cuda_tests": step("cuda_tests", {"returncode": 0, "passed": 3, "failed": 0}),
        "demo_training": step("demo_training", None),
        "kernels": step("kernels", {"records": []})})
    lines = []
    report = gpu_check.run_gpu_check(tmp_path, log=lines.append)
    assert ran == ["cuda_tests", "demo_training", "kernels"]
    assert report["ok"] is False
    assert report["steps"]["demo_training"] == {
        "ok": False, "error": "RuntimeError: out of memory",
        "seconds": report["steps"]["demo_training"]["seconds"]}
    assert report["steps"]["cuda_tests"]["passed"] == 3
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert {"torch", "triton", "cuda", "mtvision"} <= set(report["versions"])
    assert lines[-1].startswith("gpu-check: FAILED")


def test_pytest_counts_reads_the_junit_report(tmp_path):
    junit = tmp_path / "r.xml"
    junit.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="10" '
                     'failures="1" errors="2" skipped="3"/></testsuites>')
    assert gpu_check.pytest_counts(junit) == {"passed": 4, "failed": 1, "errors": 2,
                                              "skipped": 3}
