"""Distributed training with torchrun on 2 CPU processes (gloo): the same weights as one process
with the same global batch, every kind of balancer, gradient accumulation, merged evaluation,
elastic restarts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtvision.config import load_config
from mtvision.engine.checkpoint import load_checkpoint
from mtvision.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]

# Losses whose per-rank means average to the global batch's mean: equal images per rank, no
# ignored pixels (64 px images at 64 px input), no class weights. FCOS and the class-balanced
# edge loss normalise by per-batch counts, as torchvision's references do per GPU, so they
# match one process only approximately and are left out of the exact comparison.
CONFIG = {
    "model": {
        "backbone": {"name": "resnet18", "norm_eval": True},  # BN statistics are per process
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


def torchrun(script: str, args: list[str], nproc: int = 2, extra: list[str] = ()) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *extra, script, *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


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


def test_elastic_restart_resumes_from_the_last_checkpoint(tmp_path, shapes_root):
    cfg = write_config(tmp_path, shapes_root, {"name": "fixed"})
    over = ["-o", "data.batch_size=2", "-o", "train.max_iters=5", "-o",
            "train.checkpoint_iters=1"]
    out = torchrun("tests/engine/ddp_worker.py", [str(cfg), str(tmp_path / "run"), "3", *over],
                   extra=["--max-restarts=1", "--monitor-interval=0.5"])
    # Rank 0 may be stopped while it writes the checkpoint of iteration 3: then the one of
    # iteration 2 is the last complete one, and training goes on from there.
    assert re.search(r"resumed from .*last.pt at iteration [23]\n", out), out
    restarted = load_checkpoint(tmp_path / "run" / "last.pt")
    assert restarted["iteration"] == 5
    straight = single_process(cfg, tmp_path / "one", ["train.max_iters=5"])
    assert_same_weights(straight, restarted["model"])


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
