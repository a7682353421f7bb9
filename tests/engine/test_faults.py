"""Faults a training run survives: SIGKILL at any moment, a kill while a checkpoint is being
written, a full disk, an unwritable work dir, non-finite losses."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtvision.engine.checkpoint import load_checkpoint, save_checkpoint
from mtvision.engine.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tiny_cfg, **train):
    return {**tiny_cfg, "train": {**tiny_cfg["train"], "deterministic": True, **train}}


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path, overrides_for,
                                                               shapes_root):
    iters = 12
    over = [*overrides_for(shapes_root, iters=iters), "train.deterministic=true",
            "train.checkpoint_iters=1"]

    def command(work: Path, *extra: str) -> list[str]:
        return [sys.executable, "tools/train.py", str(ROOT / "configs" / "demo.yaml"),
                "--work-dir", str(work), "--device", "cpu", "--no-progress", *extra,
                *sum((["-o", o] for o in over), [])]

    # The same command line and environment for every run: bitwise equality needs the same
    # thread count (float sums are ordered by it).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "straight"), cwd=ROOT, env=env, check=True,
                   capture_output=True)
    work = tmp_path / "killed"
    proc = subprocess.Popen(command(work), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    # Kill at an arbitrary moment once the first checkpoint exists: a random delay lands
    # anywhere in a step, an evaluation or a checkpoint write.
    deadline = time.time() + 120
    while not (work / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    delay = random.uniform(0.0, 1.0)
    time.sleep(delay)
    assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(work / "last.pt")["iteration"]  # complete and valid
    assert 1 <= killed_at < iters, (killed_at, delay)

    done = subprocess.run(command(work, "--resume"), cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {work / 'last.pt'} at iteration {killed_at}" in done.stdout
    assert not list(work.glob(".*.tmp"))  # temp files of an interrupted write are removed
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(work / "last.pt")
    assert a["iteration"] == b["iteration"] == iters
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0,
                                   msg=f"{k} (killed at iteration {killed_at}, {delay:.2f} s)")
    log = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if r["type"] == "train"] == list(range(1, iters + 1))


WRITER = """
import os, sys, time, torch
sys.path.insert(0, {root!r})
from mtvision.engine import checkpoint
real_fsync = os.fsync
def slow_fsync(fd):
    print("writing", flush=True)
    time.sleep(30)  # the kill lands here: data written, not yet renamed into place
    real_fsync(fd)
os.fsync = slow_fsync
checkpoint.save_checkpoint({{"model": {{"w": torch.full((1000,), 2.0)}}, "config": {{}}}},
                           {path!r})
"""


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "config": {}, "iteration": 1}, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT),
                                                                  path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    temps = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 4000  # the new data, complete
    proc.kill()
    proc.wait(timeout=30)
    state = load_checkpoint(path)  # the previous checkpoint, whole
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.ones(1000))


def test_full_disk_at_a_checkpoint_is_a_clear_error(tiny_cfg, tmp_path, monkeypatch):
    tr = Trainer(_cfg(tiny_cfg, max_iters=8), tmp_path, device="cpu", progress=False)
    tr.save()
    before = (tmp_path / "last.pt").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(TrainingError, match=r"cannot write checkpoint .*last.pt: No space left "
                                            r"on device \(the previous one is kept\)"):
        tr.fit()
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_unwritable_work_dir_fails_at_start(tiny_cfg, tmp_path, capsys, repo_root,
                                            overrides_for, shapes_root):
    from tools import train as train_tool

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    over = sum((["-o", o] for o in overrides_for(shapes_root)), [])
    rc = train_tool.main([str(repo_root / "configs" / "demo.yaml"), "--work-dir",
                          str(blocker / "run"), "--no-progress", *over])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith(f"error: cannot write to the work dir {blocker / 'run'}: ")


def test_nonfinite_stop_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    import math

    tr = Trainer(_cfg(tiny_cfg, max_iters=8, max_nonfinite_steps=2, checkpoint_iters=1),
                 tmp_path, device="cpu", progress=False)
    head = tr.model.heads["cls"]
    real = head.loss
    calls = {"n": 0}

    def loss(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        # Good for 3 steps, then NaN for ever.
        return {n: v * math.nan for n, v in out.items()} if calls["n"] > 3 else out

    monkeypatch.setattr(head, "loss", loss)
    with pytest.warns(UserWarning, match="non-finite loss in task\\(s\\) cls"), \
            pytest.raises(TrainingError, match="2 steps in a row skipped"):
        tr.fit()
    # Step 4 was skipped (its checkpoint holds step 3's weights); step 5 was the second
    # skip in a row and stopped the run before any further write.
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    for k, v in tr.model.named_parameters():  # (BatchNorm statistics move in any forward)
        assert torch.equal(state["model"][k], v), k
