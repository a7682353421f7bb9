"""Labels outside the model's classes are one clear error where batches are made, before any
loss: the PyTorch reference raises deep in ``cross_entropy`` (or asserts on a CUDA device) and
the Triton kernels return NaN, so the losses cannot be where this is caught."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from mtvision.config import load_config
from mtvision.data.build import build_loader, head_class_counts
from mtvision.data.collate import check_label_ranges
from mtvision.data.io import DataError


def sample(targets: dict, name: str = "frankfurt_000000_000294.png") -> dict:
    return {"image": torch.zeros(3, 4, 4), "image_id": 1, "file_name": name,
            "orig_size": (4, 4), "targets": targets}


class RawIdsDataset(Dataset):
    """A custom dataset (no reader, no class names) serving Cityscapes raw label ids (0..33)
    to a 19-class head, the classic mistake."""

    source = "my-cityscapes 'val'"

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        seg = torch.full((4, 4), 7, dtype=torch.int64)  # raw id 7 = road, train id 0
        seg[0, 0] = 26 if i == 1 else 255  # raw id 26 = car (train id 13)
        return sample({"seg": seg}, f"img{i}.png")


def test_raw_label_ids_fail_when_the_batch_is_made_naming_dataset_value_and_classes():
    loader = build_loader(RawIdsDataset(), 2, 0, train=False, num_classes={"seg": 19})
    with pytest.raises(DataError) as e:
        next(iter(loader))
    msg = str(e.value)
    assert "my-cityscapes 'val'" in msg and "img1.png" in msg
    assert "seg label 26" in msg and "19 seg classes" in msg and "0..18" in msg
    assert "labelTrainIds" in msg and "\n" not in msg


def test_labels_in_range_and_ignored_pixels_pass():
    seg = torch.tensor([[0, 18], [255, 3]])
    check_label_ranges(sample({"seg": seg, "edge": torch.tensor([[0, 1], [255, 1]]),
                               "cls": torch.tensor(4), "det": {"boxes": torch.zeros(1, 4),
                                                               "labels": torch.tensor([79])}}),
                       {"seg": 19, "cls": 5, "det": 80})


@pytest.mark.parametrize("targets, needle", [
    ({"det": {"boxes": torch.zeros(2, 4), "labels": torch.tensor([3, 80])}}, "det label 80"),
    ({"det": {"boxes": torch.zeros(1, 4), "labels": torch.tensor([1]),
              "crowd_boxes": torch.zeros(1, 4), "crowd_labels": torch.tensor([-1])}},
     "det label -1"),
    ({"cls": torch.tensor(5)}, "cls label 5"),
    ({"cls": torch.tensor(255)}, "cls label 255"),  # 255 ignores pixels, not images
    ({"seg": torch.tensor([[0, -1]])}, "seg label -1"),
])
def test_every_labelled_task_is_checked(targets, needle):
    with pytest.raises(DataError, match=needle):
        check_label_ranges(sample(targets), {"det": 80, "cls": 5, "seg": 19})


def test_multi_hot_classes_depth_and_normals_are_not_class_ids():
    check_label_ranges(sample({"cls": torch.tensor([0.0, 1.0, 1.0]),
                               "depth": torch.full((4, 4), 9.0)}), {"cls": 3, "depth": 1})


def test_the_model_heads_give_the_label_ranges(repo_root):
    cfg = load_config(repo_root / "configs" / "demo.yaml")
    heads = cfg["model"]["heads"]
    assert head_class_counts(cfg["model"]) == {t: heads[t]["num_classes"]
                                               for t in ("det", "seg", "cls")}


def test_the_trainer_checks_its_batches_against_the_model(tiny_cfg, tmp_path, monkeypatch):
    # A dataset label the model's head cannot take fails with the dataset named, whichever
    # loss backend would have run (here: the 4-class head of the demo model given class 4).
    from mtvision.data import collate as collate_mod
    from mtvision.engine.trainer import Trainer

    trainer = Trainer(tiny_cfg, tmp_path / "run", device="cpu", progress=False)
    n_seg = tiny_cfg["model"]["heads"]["seg"]["num_classes"]
    real = collate_mod.check_label_ranges

    def shifted(s, num_classes, source):
        if "seg" in s["targets"]:
            s["targets"]["seg"] = torch.where(s["targets"]["seg"] == 0,
                                              torch.tensor(n_seg), s["targets"]["seg"])
        real(s, num_classes, source)

    monkeypatch.setattr(collate_mod, "check_label_ranges", shifted)
    with pytest.raises(DataError, match=f"seg label {n_seg} is out of range"):
        next(iter(trainer.train_loader))
