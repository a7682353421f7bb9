"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict::

    {"format": "mtvision-checkpoint", "version": 1, "model": state_dict,
     "config": resolved config (plain dict), "classes": {task: [names]},
     "epoch": int, "iteration": int, "best_score": float | None,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": [state of each rank],
     "balancer": ...}

Only ``model``, ``config`` and ``classes`` are needed for evaluation and inference. ``rng``
holds the RNG states of every process of the run, in rank order (``rng_state``; a single
state in checkpoints of earlier versions): each rank resumes its own (``restore_rng_state``).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvision.balancing.draws import step_seed

FORMAT = "mtvision-checkpoint"


class CheckpointError(ValueError):
    """An unreadable, foreign or unsafe checkpoint; the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` via a temp file in the same folder and ``os.replace``.

    A crash mid-write leaves the previous file intact; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": 1, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check it is an mtvision one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused payload, truncated zip, not a torch file...
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            raise CheckpointError(f"{path}: refused to load (weights_only=True): "
                                  f"{_refusal(str(e))}") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{_one_line(str(e))})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mtvision checkpoint (no '{FORMAT}' marker)")
    for key in ("model", "config"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry")
    return state


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` without terminal escape codes, on one line, at most ``limit`` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _refusal(message: str) -> str:
    """What torch's weights_only unpickler refused, in a few words (its own message spans
    lines, carries terminal escape codes and suggests weights_only=False)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}), which could run code "
                "when loaded; a checkpoint holds only tensors and plain data")
    detail = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
    return _one_line(detail.group(1) if detail else message, 200)


def weight_problems(expected: Mapping[str, Any], got: Mapping[str, Any],
                    limit: int = 3) -> list[str]:
    """How the state dict ``got`` differs from the model's ``expected`` one: missing and
    unexpected keys and shape mismatches, the first ``limit`` of each (with the total)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in got and hasattr(got[k], "shape") and hasattr(v, "shape")
              and tuple(got[k].shape) != tuple(v.shape)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected),
                       ("shape checkpoint vs model", shapes)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
            parts.append(f"{what}: {', '.join(keys[:limit])}{more}")
    return parts


def config_differences(ckpt: Any, current: Any, prefix: str = "model",
                       limit: int = 3) -> list[str]:
    """The dotted keys whose values differ between two config sections, as
    ``"key: A in the checkpoint, B in the config"`` (at most ``limit``)."""
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in dict.fromkeys([*a, *b]):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} in the config")

    walk(ckpt, current, prefix)
    return out[:limit] + ([f"... ({len(out)} in all)"] if len(out) > limit else [])


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike,
                 config_model: dict[str, Any] | None = None, ema: bool = True) -> None:
    """Load the checkpoint ``state``'s weights into ``model`` (strictly), or raise one
    ``CheckpointError`` line naming the file and the first differences: those between the
    checkpoint's ``model`` config and ``config_model`` (the config ``model`` was built from,
    when it is not the checkpoint's own) and those between the weights.

    ``ema``: the EMA weights where the checkpoint has them (``train.ema``: what evaluation,
    inference and export use); False: the raw weights (what training resumes from)."""
    weights = state["ema"]["weights"] if ema and state.get("ema") else state["model"]
    problems = weight_problems(model.state_dict(), weights)
    if not problems:
        try:
            model.load_state_dict(weights)
            return
        except (RuntimeError, TypeError, ValueError) as e:  # e.g. a non-tensor entry
            problems = [_one_line(str(e))]
    what = "its config"
    if config_model is not None:
        what = "this config"
        ckpt_model = (state.get("config") or {}).get("model")
        diffs = config_differences(ckpt_model, config_model) if ckpt_model else []
        if diffs:
            problems = [*diffs, *problems]
    raise CheckpointError(f"{path}: weights do not fit the model of {what} "
                          f"({'; '.join(problems)})")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain lists (safe for weights_only)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    # RNG states must be CPU byte tensors, wherever the checkpoint was mapped to.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # Written where more devices were visible: the states of the devices present.
        cuda = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def restore_rng_state(saved: list[dict[str, Any]] | dict[str, Any], rank: int, world: int,
                      seed: int, iteration: int) -> str | None:
    """Restore rank ``rank``'s own RNG states from a checkpoint's ``rng`` entry (one state per
    rank of the run that wrote it; a single state in earlier checkpoints).

    Written by another number of processes than ``world``, the ranks' streams cannot be paired
    up: every rank then seeds Python, NumPy and torch from ``(seed, iteration)`` alike, as a
    fresh run seeds every rank, and the returned note says so (None when restored)."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == world:
        set_rng_state(states[rank])
        return None
    s = step_seed(seed, iteration)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return (f"the checkpoint holds the RNG states of {len(states)} process(es) and this run "
            f"has {world}: every rank's RNG is seeded from (train.seed, iteration {iteration}), "
            "so random draws will not repeat those of the interrupted run")
