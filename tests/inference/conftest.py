"""Fixtures of the inference tests: a tiny untrained checkpoint and the small real media.

Test modules take these as fixtures rather than importing this file: ``tests/conftest.py``
shares the module name ``conftest``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
CLIP = DATA / "clip.mp4"  # 10 frames, 192x108, 12.5 fps (see LICENSE-clip.txt)
IMAGES = DATA / "images"  # two COCO images, 160x120 and 160x107 (see LICENSE.txt there)

TINY_CONFIG = {
    "model": {
        "backbone": {"name": "resnet18"},
        "neck": {"name": "fpn", "channels": 32},
        "heads": {
            "det": {"name": "fcos", "num_classes": 3},
            "seg": {"name": "fpn_seg", "num_classes": 4},
            "edge": {"name": "hed"},
            "cls": {"name": "linear", "num_classes": 2},
        },
    },
    "data": {"image_size": [64, 64]},
}
CLASSES = {"det": ["car", "person", "dog"], "seg": ["background", "road", "car", "sky"],
           "cls": ["day", "night"]}


def make_checkpoint(path: Path, config: dict | None = None, state_dict: dict | None = None,
                    classes: dict | None = None) -> Path:
    """Save an untrained model's checkpoint (weights of ``config`` unless ``state_dict``)."""
    import torch

    from mtvision.engine.checkpoint import save_checkpoint
    from mtvision.models import build_model

    config = copy.deepcopy(config or TINY_CONFIG)
    if state_dict is None:
        torch.manual_seed(0)
        state_dict = build_model(config["model"]).state_dict()
    return save_checkpoint({"model": state_dict, "config": config,
                            "classes": classes if classes is not None else CLASSES}, path)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the four-task tiny model (64x64 input), made once per session."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture
def checkpoint_factory():
    """``make_checkpoint(path, config=None, state_dict=None, classes=None) -> path``."""
    return make_checkpoint


@pytest.fixture
def clip_path() -> Path:
    return CLIP


@pytest.fixture
def images_dir() -> Path:
    return IMAGES


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture
def class_names() -> dict:
    return copy.deepcopy(CLASSES)
