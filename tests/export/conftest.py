"""Fixtures of the export tests: tiny untrained checkpoints (64x64 input) and a real photo.

Test modules take these as fixtures rather than importing this file: ``tests/conftest.py``
shares the module name ``conftest``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"  # two COCO photos
PHOTO = IMAGES / "000000343934.jpg"  # 160x120
PHOTO2 = IMAGES / "000000128372.jpg"  # 160x107

TINY_CONFIG = {
    "model": {
        "backbone": {"name": "resnet18"},
        "neck": {"name": "fpn", "channels": 32},
        "heads": {
            # A higher threshold and a small cap: a few dozen detections, the cap reached.
            "det": {"name": "fcos", "num_classes": 3, "score_thresh": 0.3,
                    "max_detections": 30},
            "seg": {"name": "fpn_seg", "num_classes": 4},
            "edge": {"name": "hed"},
            "cls": {"name": "linear", "num_classes": 2},
        },
    },
    "data": {"image_size": [64, 64]},
}
DENSE_CONFIG = {
    "model": {
        "backbone": {"name": "resnet18"},
        "neck": {"name": "fpn", "channels": 32},
        "heads": {
            "depth": {"name": "fpn_depth", "channels": 16},
            "normals": {"name": "fpn_normals", "channels": 16},
            "cls": {"name": "linear", "num_classes": 3, "multi_label": True},
        },
    },
    "data": {"image_size": [64, 64]},
}
CLASSES = {"det": ["car", "person", "dog"], "seg": ["background", "road", "car", "sky"],
           "cls": ["day", "night"]}


def make_checkpoint(path: Path, config: dict | None = None) -> Path:
    """Save an untrained model's checkpoint.

    The detection head gets larger output weights than its initialisation (std 0.01, which
    scores every location alike): with spread-out scores, an NMS result cannot hinge on
    float rounding between near-equal scores.
    """
    import torch

    from mtvision.engine.checkpoint import save_checkpoint
    from mtvision.models import build_model

    config = copy.deepcopy(config or TINY_CONFIG)
    torch.manual_seed(0)
    model = build_model(config["model"])
    if "det" in model.heads:
        head = model.heads["det"]
        with torch.no_grad():
            for conv in (head.cls_logits, head.ctr_pred, head.box_pred):
                torch.nn.init.normal_(conv.weight, std=0.2)
            head.cls_logits.bias.fill_(-1.0)
    classes = CLASSES if "det" in config["model"]["heads"] else {"cls": ["a", "b", "c"]}
    return save_checkpoint({"model": model.state_dict(), "config": config, "classes": classes},
                           path)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The four-task tiny model (det, seg, edge, cls), made once per session."""
    return make_checkpoint(tmp_path_factory.mktemp("export_ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def dense_checkpoint(tmp_path_factory) -> Path:
    """A depth + normals + multi-label classification model."""
    return make_checkpoint(tmp_path_factory.mktemp("export_dense") / "dense.pt", DENSE_CONFIG)


@pytest.fixture
def ckpt_copy(tmp_path, checkpoint) -> Path:
    """The tiny checkpoint in this test's own folder, so that exports land there."""
    import shutil

    return Path(shutil.copy(checkpoint, tmp_path / "tiny.pt"))


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    from mtvision.data.io import read_image

    return [read_image(PHOTO), read_image(PHOTO2)]
