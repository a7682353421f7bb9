"""Shared fixtures: a tiny config of the demo model on a tiny generated shapes set."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so tests can import tools/*.py as modules


def pytest_configure(config):
    """Triton decides between compiling and interpreting when a kernel is defined, so
    ``TRITON_INTERPRET`` is set before any test module imports ``kernels``: 1 (the Triton path
    runs on the CPU) except for ``pytest -m cuda``, which runs the kernels compiled on the GPU.
    An explicit ``TRITON_INTERPRET`` wins either way."""
    if (config.getoption("markexpr") or "").strip() != "cuda":
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where a CUDA device is present and are skipped, with the
    reason, everywhere else (``pytest -rs`` shows it)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked 'cuda'; run with pytest -m cuda "
                                   "on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def tiny_overrides(data_root: Path, iters: int = 4) -> list[str]:
    return [
        f"data.root={data_root}",
        "data.synthetic={num_train: 16, num_val: 4, image_size: 64, seed: 1}",
        "data.image_size=[64, 64]",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.neck.channels=32",
        f"train.max_iters={iters}",
        "train.scheduler.warmup_iters=2",
        "train.log_interval=1",
        "train.tensorboard=false",
        "eval.edge_thresholds=9",
    ]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def overrides_for():
    """``overrides_for(data_root, iters)``: the -o list of the tiny demo config."""
    return tiny_overrides


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny shapes dataset shared by the end-to-end tests (generated once)."""
    from mtvision.data.synthetic import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=16, num_val=4, image_size=64, seed=1)
    return root


@pytest.fixture
def tiny_cfg(shapes_root):
    from mtvision.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml", tiny_overrides(shapes_root))


SAMPLES = ROOT / "tests" / "data" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Small redistributable real data copied into the repository (see its README)."""
    return SAMPLES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared sample data (``$MTV_SHARED_DATA``, default ``../shared/data``).

    Research-only sets (BSDS500, CamVid, VOC) are read from there, never copied into the
    repository; tests that need them skip where the folder is absent.
    """
    path = Path(os.environ.get("MTV_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared sample data not found at {path} (set MTV_SHARED_DATA)")
    return path
