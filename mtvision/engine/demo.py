"""The demo job behind ``make demo``: generate data, train, evaluate, run inference, report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from mtvision.config import load_config
from mtvision.engine.evaluator import evaluate_checkpoint, format_table
from mtvision.engine.trainer import train

# What the demo should reach on the synthetic data (see README).
TARGETS = {("det", "mAP50"): 0.5, ("seg", "mIoU"): 0.6, ("edge", "ODS"): 0.5, ("cls", "top1"): 0.8}


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal once both are plain JSON (tuples and lists alike), the work dir left out."""
    def plain(c: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in c.items() if k != "work_dir"}, sort_keys=True,
                          default=str)

    return plain(a) == plain(b)


def finished_run(work: Path, cfg: dict[str, Any]) -> str | None:
    """Why ``work`` already holds the finished training of ``cfg``, or None.

    Finished: ``Trainer.fit`` wrote ``val_metrics.json`` after its last checkpoint (an
    interrupted or extended run has a newer ``last.pt``), and the run's saved config is
    ``cfg``."""
    last, done, saved = work / "last.pt", work / "val_metrics.json", work / "config.yaml"
    if not (last.is_file() and done.is_file() and saved.is_file() and (work / "best.pt").is_file()):
        return None
    if done.stat().st_mtime < last.stat().st_mtime:
        return None
    try:
        with open(saved) as f:
            if not _same_config(yaml.safe_load(f) or {}, cfg):
                return None
    except (OSError, yaml.YAMLError):
        return None
    return f"{work} holds a finished run of this config"


def run_demo(config: str = "demo", overrides: list[str] | None = None,
             device: str = "auto", num_images: int = 4, video_frames: int = 24,
             progress: bool = True) -> dict[str, Any]:
    """Train ``config`` (resuming a finished or interrupted run), evaluate the best
    checkpoint into ``WORK_DIR/metrics.json``, run inference on validation images and on a
    video made from them, and print a table of the metrics and the outputs."""
    from mtvision.data.io import read_image
    from mtvision.inference import run_inference, write_video

    t0 = time.time()
    cfg = load_config(config, overrides)
    work = Path(cfg["work_dir"] or f"runs/{Path(config).stem}")
    cfg["work_dir"] = str(work)
    ckpt = work / "best.pt"
    metrics_path = work / "metrics.json"
    reused = finished_run(work, cfg)
    if reused:
        # The first line a second `make demo` prints.
        print(f"{reused}: reusing it (delete {work} to train again)", flush=True)
    else:
        resume = (work / "last.pt").is_file()
        print(f"[1/3] training{' (resuming ' + str(work / 'last.pt') + ')' if resume else ''}",
              flush=True)
        train(cfg, work, resume=resume, device=device, progress=progress)
    t_train = time.time() - t0
    t1 = time.time()

    if reused and metrics_path.is_file() and \
            metrics_path.stat().st_mtime >= ckpt.stat().st_mtime:
        print(f"reusing the evaluation {metrics_path}", flush=True)
        with open(metrics_path) as f:
            metrics = json.load(f)
    else:
        print("[2/3] evaluation of the best checkpoint on the held-out split (exact edge "
              "protocol)", flush=True)
        metrics = evaluate_checkpoint(cfg, str(ckpt), str(metrics_path), device,
                                      progress=progress)

    t_eval = time.time() - t1
    t2 = time.time()
    val_dir = Path(cfg["data"]["root"]) / "images" / cfg["data"]["val_split"]
    val_images = sorted(val_dir.iterdir())
    inputs = work / "infer_inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    for p in val_images[:num_images]:
        shutil.copy(p, inputs / p.name)
    print(f"[3/3] inference on {min(num_images, len(val_images))} images and a "
          f"{min(video_frames, len(val_images))}-frame video", flush=True)
    video = write_video((read_image(p) for p in val_images[:video_frames]),
                        work / "demo_video.mp4", fps=4)
    img_out = run_inference(str(ckpt), str(inputs), str(work / "infer" / "images"), device,
                            progress=progress)
    vid_out = run_inference(str(ckpt), str(video), str(work / "infer" / "video"), device,
                            progress=progress)

    t_infer = time.time() - t2
    print("\n" + format_table(metrics))
    print("\ntargets:")
    ok = True
    for (task, name), target in TARGETS.items():
        if task in metrics:
            value = metrics[task][name]
            ok &= value >= target
            print(f"  {task}.{name} = {value:.3f} (target >= {target}) "
                  f"{'ok' if value >= target else 'MISSED'}")
    print("\noutputs:")
    for label, path in [
        ("resolved config", work / "config.yaml"), ("checkpoints", f"{work}/{{last,best}}.pt"),
        ("training log", work / "metrics.jsonl"), ("training curves", work / "curves.png"),
        ("metrics JSON", metrics_path), ("annotated images", img_out["out_dir"]),
        ("input video", video), ("annotated video", vid_out["video"]),
        ("per-frame JSON", vid_out["predictions"]),
    ]:
        print(f"  {label:<17} {path}")
    what = "reused run" if reused else f"training {t_train:.0f} s"
    print(f"\ndemo finished in {time.time() - t0:.0f} s ({what}, evaluation {t_eval:.0f} s, "
          f"inference {t_infer:.0f} s)")
    return {"metrics": metrics, "targets_met": ok, "work_dir": str(work), "reused": bool(reused)}
