"""The wheel as a user gets it: built from this checkout, installed with ``--no-deps`` into a
fresh virtual environment that sees the current one's packages (torch & co.), and run from an
unrelated folder: ``mtvision --version``, ``mtvision demo`` and ``mtvision infer``."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The demo shrunk to seconds: 2 iterations on 8 generated images of 64 px.
TINY = ["-o", "data.synthetic={num_train: 8, num_val: 2, image_size: 64, seed: 0}",
        "-o", "data.image_size=[64, 64]", "-o", "data.batch_size=4", "-o", "train.max_iters=2",
        "-o", "train.scheduler.warmup_iters=1", "-o", "train.tensorboard=false",
        "-o", "eval.edge_thresholds=5", "-o", "model.neck.channels=16"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools leaves build/ and *.egg-info in the source folder, and a
    # stale build/lib would end up in later wheels.
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    anywhere = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".pytest_cache",
                                      ".ruff_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {".venv", "build", "dist", "runs", "data"} if Path(folder) == ROOT else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, src, ignore=ignore)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)], cwd=out)
    (whl,) = out.glob("mtvision-*.whl")
    return whl


def test_the_wheel_holds_the_configs_and_no_top_level_kernels(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("kernels/")]
    assert "mtvision/kernels/__init__.py" in names
    assert "mtvision/kernels/jit/cross_entropy.py" in names
    assert "mtvision/configs/demo.yaml" in names
    assert "mtvision/configs/_base_/runtime.yaml" in names
    shipped = {n.removeprefix("mtvision/configs/") for n in names
               if n.startswith("mtvision/configs/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped == in_repo


def test_the_installed_command_trains_predicts_and_reports_versions(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    # Beside the current environment's packages (torch, ...), but not this checkout.
    lib = next((venv / "lib").glob("python*/site-packages"))
    here = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (lib / "current-env.pth").write_text("\n".join(here) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    mtv = [str(venv / "bin" / "mtvision")]  # the console script
    where = run([str(venv / "bin" / "python"), "-c", "import mtvision, mtvision.kernels as k; "
                 "print(mtvision.__file__); print(k.__file__)"], cwd=work, env=env)
    assert all(str(lib) in line for line in where.splitlines()), where
    assert "triton" in run([*mtv, "--version"], cwd=work, env=env)
    # The demo job itself (train, evaluate, inference on images and a video), shrunk.
    out = run([*mtv, "demo", "--device", "cpu", "-o", "work_dir=run", "-o", "data.root=shapes",
               *TINY], cwd=work, env=env)
    assert "targets:" in out and (work / "run" / "metrics.json").is_file()
    assert (work / "run" / "best.pt").is_file()
    image = next((work / "shapes" / "images" / "val").iterdir())
    run([*mtv, "infer", "run/best.pt", str(image), "--out", "pred", "--device", "cpu"],
        cwd=work, env=env)
    assert (work / "pred" / f"{image.stem}_seg.png").is_file()
