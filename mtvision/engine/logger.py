"""Run logs: ``metrics.jsonl`` (one JSON object per line), TensorBoard when installed, and
the training-curve plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends records to ``work_dir/metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, work_dir: str | os.PathLike, tensorboard: bool = True,
                 resume_at: int | None = None) -> None:
        """A fresh run starts a new log; a run resumed at iteration ``resume_at`` keeps the
        records up to it and drops those the interrupted run wrote after its checkpoint."""
        self.path = Path(work_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = ([r for r in read_jsonl(self.path) if r.get("iter", 0) <= resume_at]
                if resume_at is not None and self.path.is_file() else [])
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(work_dir) / "tb"))
            except ImportError:  # TensorBoard is optional
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.tb is not None:
            step = record.get("iter", 0)
            prefix = record.get("type", "train")
            for k, v in _flatten(record).items():
                if k not in ("iter", "epoch", "type") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
    return out


def plot_training_curves(jsonl: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Loss per task against iteration, and the validation metrics per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(jsonl)
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    if not train:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({k for r in train for k in r.get("losses", {})})
    for k in keys:
        pts = [(r["iter"], r["losses"][k]) for r in train if k in r.get("losses", {})]
        pts = [p for p in pts if math.isfinite(p[1])]
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    axes[0].set(xlabel="iteration", ylabel="loss", title="training losses", yscale="log")
    axes[0].legend()
    for task_metric in sorted({f"{t}.{m}" for r in evals for t, ms in r["metrics"].items()
                               for m, v in ms.items() if isinstance(v, (int, float))}):
        t, m = task_metric.split(".", 1)
        pts = [(r["iter"], r["metrics"][t][m]) for r in evals if m in r["metrics"].get(t, {})]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=task_metric)
    axes[1].set(xlabel="iteration", ylabel="value", title="validation metrics", ylim=(0, 1))
    if evals:
        axes[1].legend(fontsize=7)
    return _save_figure(fig, out_png)


def plot_task_interference(jsonl: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Pairwise cosine similarities of the task gradients (below 0: the tasks conflict) and
    each task's weight against iteration; None when the run logged no gradient statistics
    (a loss-based balancer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in read_jsonl(jsonl) if r.get("type") == "train"]
    if not any(r.get("cos") for r in train):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "cos", "task-gradient cosine similarity"),
                           (axes[1], "weights", "task weights")):
        for name in sorted({k for r in train for k in r.get(key, {})}):
            pts = [(r["iter"], r[key][name]) for r in train if name in r.get(key, {})]
            pts = [p for p in pts if math.isfinite(p[1])]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name.replace("|", " / "))
        ax.set(xlabel="iteration", title=title)
        ax.legend(fontsize=7)
    axes[0].axhline(0.0, color="grey", lw=0.8, ls="--")
    axes[0].set(ylim=(-1, 1), ylabel="cosine")
    return _save_figure(fig, out_png)


def _save_figure(fig: Any, out_png: str | os.PathLike) -> Path:
    """Write ``fig`` atomically (a temp file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png
