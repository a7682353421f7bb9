"""The demo job: a finished run is reused (said on the first line), a changed config is not."""

from __future__ import annotations

import json
import os

from mtvision.config import load_config
from mtvision.engine.demo import finished_run, run_demo


def test_second_demo_reuses_the_finished_run(repo_root, shapes_root, overrides_for, tmp_path,
                                             capsys) -> None:
    config = str(repo_root / "configs" / "demo.yaml")
    over = [*overrides_for(shapes_root, 2), f"work_dir={tmp_path / 'run'}"]
    first = run_demo(config, over, "cpu", num_images=1, video_frames=2, progress=False)
    out = capsys.readouterr().out
    assert not first["reused"] and "[1/3] training" in out.splitlines()[0]
    work = tmp_path / "run"
    stamps = {n: os.stat(work / n).st_mtime_ns for n in ("last.pt", "best.pt", "metrics.json")}

    second = run_demo(config, over, "cpu", num_images=1, video_frames=2, progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert second["reused"]
    assert lines[0] == f"{work} holds a finished run of this config: reusing it (delete {work} " \
                       "to train again)"
    # Neither trained nor evaluated again: the checkpoints and the metrics file are untouched.
    assert {n: os.stat(work / n).st_mtime_ns for n in stamps} == stamps
    # The saved metrics, as JSON (NaN scores of absent classes compare equal there).
    assert json.dumps(second["metrics"], sort_keys=True) == \
        json.dumps(first["metrics"], sort_keys=True, default=list)
    assert "demo finished" in lines[-1] and "reused run" in lines[-1]

    # Another config (more iterations) or a run extended since: not the finished run.
    longer = load_config(config, [*overrides_for(shapes_root, 3), f"work_dir={work}"])
    assert finished_run(work, longer) is None
    same = load_config(config, over)
    assert finished_run(work, same) is not None
    os.utime(work / "last.pt")  # a checkpoint written after the end of fit
    newer = os.stat(work / "val_metrics.json").st_mtime + 10
    os.utime(work / "last.pt", (newer, newer))
    assert finished_run(work, same) is None
