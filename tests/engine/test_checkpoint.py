"""Checkpoints: atomic writes, safe loading, clear errors."""

import os

import pytest
import torch

from mtvision.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


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
