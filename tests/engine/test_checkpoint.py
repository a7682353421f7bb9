"""Checkpoints: atomic writes, safe loading, clear errors."""

import os
import random

import numpy as np
import pytest
import torch

from mtvision.balancing.draws import step_seed
from mtvision.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"a": 1}, "iteration": 7}
    path = save_checkpoint(state, tmp_path / "c.pt")
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["config"] == {"a": 1} and back["iteration"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint({"model": {}, "config": {"v": 1}}, tmp_path / "c.pt")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {}, "config": {"v": 2}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["config"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "mtvision-checkpoint", "model": {}, "config": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only"):
        load_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path):
    path = save_checkpoint({"model": {"w": torch.ones(1000)}, "config": {}}, tmp_path / "c.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an mtvision checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def seeded_state(seed):
    """The RNG states after seeding everything with ``seed``, and the draws that follow."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    state = rng_state()
    return state, draws()


def draws():
    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def test_each_rank_restores_its_own_rng_state(tmp_path):
    # Two ranks whose generators went different ways (as two GPUs' do): rank 0 writes both
    # states; each rank must get its own back, not rank 0's.
    (s0, d0), (s1, d1) = seeded_state(10), seeded_state(11)
    path = save_checkpoint({"model": {}, "config": {}, "rng": [s0, s1]}, tmp_path / "c.pt")
    saved = load_checkpoint(path)["rng"]  # weights_only=True reads the list of states
    for rank, expected in ((1, d1), (0, d0)):
        torch.manual_seed(123)
        assert restore_rng_state(saved, rank, 2, seed=0, iteration=5) is None
        assert draws() == expected
    # One process, and checkpoints of earlier versions (one state, not a list).
    assert restore_rng_state(s1, 0, 1, seed=0, iteration=5) is None
    assert draws() == d1


def test_a_changed_world_size_seeds_every_rank_alike_and_says_so():
    states = [seeded_state(10)[0], seeded_state(11)[0]]
    got = []
    for rank in (0, 2):
        note = restore_rng_state(states, rank, 3, seed=4, iteration=9)
        assert "RNG states of 2 process(es) and this run has 3" in note
        got.append(torch.rand(4))
    torch.manual_seed(step_seed(4, 9))
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], torch.rand(4))


@pytest.mark.cuda
def test_each_rank_restores_its_own_cuda_rng_state():
    # A rank's CUDA generator state comes back from its own entry, not rank 0's.
    states, expected = [], []
    for seed in (10, 11):
        torch.manual_seed(seed)  # seeds every CUDA device too
        torch.rand(5, device="cuda")  # the two "ranks" advanced their generators differently
        states.append(rng_state())
        expected.append(torch.rand(4, device="cuda"))
    for rank in (1, 0):
        assert restore_rng_state(states, rank, 2, seed=0, iteration=5) is None
        assert torch.equal(torch.rand(4, device="cuda"), expected[rank])
