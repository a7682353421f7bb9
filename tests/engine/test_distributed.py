"""Distributed training with torchrun on 2 CPU processes (gloo): the same weights as one process
with the same global batch, every kind of balancer, gradient accumulation, merged evaluation,
elastic restarts that end bit-identical to an uninterrupted run, ranks that never drift
apart."""

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtvision.config import load_config
from mtvision.engine.checkpoint import load_checkpoint
from mtvision.engine.trainer import Trainer
from mtvision.models import build_model

ROOT = Path(__file__).resolve().parents[2]

# Losses whose per-rank means average to the global batch's mean: equal images per rank, no
# ignored pixels (64 px images at 64 px input), no class weights. FCOS and the class-balanced
# edge loss normalise by per-batch counts, as torchvision's references do per GPU, so they
# match one process only approximately and are left out of the exact comparison.
# No max pooling: the synthetic images' flat regions give windows of exactly tied values, whose
# arg-max (where max pooling sends the gradient) a 1-ulp difference in the ranks' summation
# order flips; a ResNet stem then makes the runs differ by 1e-4 after three steps, by chance.
CONFIG = {
    "model": {
        # BN statistics are per process: frozen.
        "backbone": {"name": "mobilenet_v3_large", "norm_eval": True},
        "neck": {"name": "fpn", "channels": 16},
        "heads": {"seg": {"name": "fpn_seg", "num_classes": 5, "channels": 16},
                  "cls": {"name": "linear", "num_classes": 4}},
    },
    "data": {"type": "mtvision", "synthetic": {"num_train": 16, "num_val": 4,
                                                "image_size": 64, "seed": 1},
             "image_size": [64, 64], "batch_size": 4, "num_workers": 0,
             "train_transforms": []},
    "train": {"max_iters": 3, "deterministic": True, "amp": "none",
              "optimizer": {"name": "sgd", "lr": 0.02}, "scheduler": {"warmup_iters": 0},
              "eval_interval": 100, "tensorboard": False, "log_interval": 1},
    "eval": {"edge_thresholds": 9},
}


def write_config(tmp_path: Path, shapes_root: Path, balancer: dict) -> Path:
    cfg = {**CONFIG, "data": {**CONFIG["data"], "root": str(shapes_root)},
           "balancer": balancer}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


WORKER = "tests/engine/ddp_worker.py"


def torchrun(script: str, args: list[str], nproc: int = 2, extra: list[str] = (),
             ok: bool | None = True, timeout: float = 900) -> str:
    """The workers' stdout when the run must succeed (``ok``); stdout and stderr when it must
    fail (``ok=False``) or may (``None``: the callers check what they need). Never hangs:
    after ``timeout`` s the agent and its workers are killed and the test fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *extra, script, *args]
    # A session of its own, so a timeout kills the workers too, not only the agent.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun ran over {timeout} s and was killed:\n{out[-2000:]}{err[-3000:]}")
    if ok:
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
        return out
    if ok is False:
        assert proc.returncode != 0, out[-3000:]
    return out + err


def single_process(cfg_path: Path, work: Path, overrides: list[str] = ()) -> dict:
    # One thread, as each torchrun worker has (OMP_NUM_THREADS=1): float sums then differ
    # only by the ranks' split of the batch, whatever thread count earlier tests left.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(load_config(cfg_path, list(overrides)), work, device="cpu",
                          progress=False)
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return trainer.model.state_dict()


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    # Training moves the weights by > 1e-3 (asserted where it matters): 100x the tolerance.
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=atol, msg=k)


@pytest.mark.parametrize("balancer, per_rank, accumulate", [
    ({"name": "fixed"}, 2, 1),  # DDP's own gradient hooks
    ({"name": "uncertainty"}, 2, 1),  # + learned balancer parameters
    ({"name": "mgda", "mode": "param"}, 1, 2),  # T x P all-reduce, accumulation with DDP
    ({"name": "pcgrad", "mode": "feature"}, 2, 1),  # Gram all-reduce, then all gradients
])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, shapes_root, balancer,
                                                             per_rank, accumulate):
    cfg = write_config(tmp_path, shapes_root, balancer)
    one = single_process(cfg, tmp_path / "one")  # batch 4
    torchrun("tools/train.py", [str(cfg), "--work-dir", str(tmp_path / "two"), "--device",
                                "cpu", "--no-progress", "-o", f"data.batch_size={per_rank}",
                                "-o", f"train.accumulate={accumulate}"])
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert two["iteration"] == 3
    start = Trainer(load_config(cfg), tmp_path / "init", device="cpu", progress=False)
    moved = max(float((start.model.state_dict()[k].float() - v.float()).abs().max())
                for k, v in one.items())
    assert moved > 1e-3  # the comparison is between runs that did train
    assert_same_weights(one, two["model"])
    # Evaluation merged over the ranks scores the whole validation set, as one process does.
    m_one = json.loads((tmp_path / "one" / "val_metrics.json").read_text())
    m_two = json.loads((tmp_path / "two" / "val_metrics.json").read_text())
    assert m_two["seg"]["pixel_acc"] == pytest.approx(m_one["seg"]["pixel_acc"], abs=1e-4)
    assert m_two["cls"]["top1"] == pytest.approx(m_one["cls"]["top1"])
    # Only rank 0 writes: one train record per iteration in the log, not one per process.
    log = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if r["type"] == "train"] == [1, 2, 3]


def test_accumulation_matches_the_large_batch(tmp_path, shapes_root):
    for balancer in ({"name": "fixed"}, {"name": "mgda", "mode": "param"}):
        cfg = write_config(tmp_path, shapes_root, balancer)
        big = single_process(cfg, tmp_path / f"big_{balancer['name']}")
        small = single_process(cfg, tmp_path / f"acc_{balancer['name']}",
                               ["data.batch_size=2", "train.accumulate=2"])
        assert_same_weights(big, small)


def assert_identical(a, b, where: str = "checkpoint") -> None:
    """``a`` and ``b`` (nested dicts, lists, tensors, numbers) equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def rank_reports(out: str, run: str) -> dict[int, tuple[str, str]]:
    """Each rank's (weights, RNG) digests at the end of ``run``, as ``ddp_worker`` prints."""
    found = re.findall(rf"^run {re.escape(run)} rank (\d+) weights (\w+) rng (\w+)$", out,
                       re.M)
    return {int(r): (w, g) for r, w, g in found}


# Killed and restarted runs: small, 5 steps, a checkpoint after each.
RESTART_OVERRIDES = ["data.batch_size=2", "train.max_iters=5", "train.checkpoint_iters=1"]
RESTARTED = {
    "fixed": {"name": "fixed"},  # DDP's gradient hooks
    "graddrop-param": {"name": "graddrop", "mode": "param"},  # random masks, T x P all-reduce
}


def restart_plan(balancers: dict[str, dict]) -> list[dict]:
    """Per balancer, the run uninterrupted and the same run with rank 1 killed before
    iteration 3 (in attempt i for the i-th balancer: one restart each)."""
    plan = []
    for i, (name, balancer) in enumerate(balancers.items()):
        over = [f"balancer={json.dumps(balancer)}", *RESTART_OVERRIDES]
        plan += [{"name": f"{name}-straight", "overrides": over},
                 {"name": f"{name}-restarted", "overrides": over, "crash_at": 3, "attempt": i}]
    return plan


@pytest.fixture(scope="module")
def launch(tmp_path_factory, shapes_root) -> tuple[Path, str]:
    """One torchrun launch for the tests below (importing torch is most of a launch's time):
    the runs of ``restart_plan(RESTARTED)``, then a run whose rank 1 drifts apart."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = write_config(tmp, shapes_root, {"name": "fixed"})
    drift = {"name": "drift", "overrides": ["data.batch_size=2", "train.max_iters=4",
                                            "train.check_replicas=1"],
             "perturb_at": 2, "expect_error": True}
    out = torchrun(WORKER, [str(cfg), str(tmp / "runs"),
                            json.dumps([*restart_plan(RESTARTED), drift])],
                   extra=[f"--max-restarts={len(RESTARTED)}", "--monitor-interval=0.5"],
                   ok=None)
    return tmp / "runs", out


def check_restart(runs: Path, out: str, name: str) -> None:
    """The killed and restarted run ``name`` ends exactly as the uninterrupted one: weights,
    optimizer, scheduler, balancer state, every rank's RNG state and iteration, bit for bit,
    whichever checkpoint (2, or 3 when rank 0 finished writing it) the restart found; and the
    ranks, whose global generators were seeded apart, hold the same weights."""
    assert re.search(rf"resumed from .*{name}-restarted/last.pt at iteration [23]\n", out), \
        out[-3000:]
    reports = {run: rank_reports(out, f"{name}-{run}") for run in ("straight", "restarted")}
    for run, ranks in reports.items():
        assert sorted(ranks) == [0, 1], (run, out[-3000:])
        assert ranks[0][0] == ranks[1][0], f"{name}-{run}: the ranks' weights differ"
    # Each rank resumed its own RNG state (rank 0's on rank 1 would differ from here on).
    assert reports["straight"] == reports["restarted"]
    a = load_checkpoint(runs / f"{name}-straight" / "last.pt")
    b = load_checkpoint(runs / f"{name}-restarted" / "last.pt")
    assert a["iteration"] == b["iteration"] == 5
    assert len(a["rng"]) == 2  # one RNG state per rank
    assert_identical({k: v for k, v in a.items() if k != "config"},
                     {k: v for k, v in b.items() if k != "config"})


@pytest.mark.parametrize("name", list(RESTARTED))
def test_elastic_restart_resumes_from_the_last_checkpoint(launch, name):
    check_restart(*launch, name)


@pytest.mark.slow
def test_elastic_restart_with_random_orders(tmp_path, shapes_root):
    plan = restart_plan({"pcgrad-param": {"name": "pcgrad", "mode": "param"}})
    cfg = write_config(tmp_path, shapes_root, {"name": "fixed"})
    out = torchrun(WORKER, [str(cfg), str(tmp_path / "runs"), json.dumps(plan)],
                   extra=["--max-restarts=1", "--monitor-interval=0.5"])
    check_restart(tmp_path / "runs", out, "pcgrad-param")


def test_check_replicas_stops_when_the_ranks_drift_apart(launch, shapes_root, tmp_path):
    # Rank 1 changes one weight after iteration 2; checked after every step, the run passes
    # iterations 1 and 2 and stops after 3 (the first step taken with the changed weight)
    # with one error naming the iteration, the rank and the parameter.
    cfg = load_config(write_config(tmp_path, shapes_root, {"name": "fixed"}))
    first = next(n for n, _ in build_model(cfg["model"]).named_parameters())
    assert (f"run drift error: train.check_replicas: after iteration 3 the weights of rank 1 "
            f"differ from rank 0's (first in '{first}')") in launch[1], launch[1][-3000:]


def test_sync_bn_needs_cuda(tmp_path, shapes_root):
    from mtvision.registry import ConfigError

    cfg = load_config(write_config(tmp_path, shapes_root, {"name": "fixed"}),
                      ["train.sync_bn=true"])
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        Trainer(cfg, tmp_path / "w", device="cpu", progress=False)


@pytest.mark.slow
def test_every_balancer_keeps_the_ranks_in_step(tmp_path, tiny_cfg):
    # The four-task demo model (det and edge included), every method and mode, 2 steps each:
    # no collective may hang or be skipped on one rank, and the ranks end with equal weights.
    from mtvision.balancing import BALANCERS

    cfg = {k: v for k, v in tiny_cfg.items() if k != "work_dir"}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = torchrun("tests/engine/ddp_all_balancers.py", [str(path), str(tmp_path / "runs")])
    lines = [x.split() for x in out.splitlines() if len(x.split()) == 3]
    assert {name for name, _, _ in lines} == set(BALANCERS.names())
    assert all(state == "same" for _, _, state in lines), out
