"""The input pipeline: persistent workers that still follow each epoch's augmentation seed,
uint8 batches normalised on the device, pinned memory on CUDA."""

from __future__ import annotations

import pytest
import torch

from mtvision.data.build import build_dataset, build_loader, move_batch
from mtvision.data.transforms import normalize_images


def _data_cfg(tiny_cfg):
    dcfg = dict(tiny_cfg["data"])
    # Flips and colour changes on every image: two epochs' seeds give different batches.
    dcfg["train_transforms"] = [{"name": "HorizontalFlip", "p": 0.5},
                                {"name": "RandomBrightnessContrast", "p": 1.0}]
    return dcfg


def _epochs(ds, loader, seeds):
    out = []
    for seed in seeds:
        ds.set_epoch(seed)
        loader.sampler.set_epoch(0)
        out.append(torch.cat([b["images"] for b in loader]))
    return out


def test_persistent_workers_follow_each_epochs_augmentation_seed(tiny_cfg):
    dcfg = _data_cfg(tiny_cfg)
    ds = build_dataset(dcfg, dcfg["train_split"], train=True)
    workers = build_loader(ds, 4, 1, train=True, seed=3)
    assert workers.persistent_workers
    a, b, a2 = _epochs(ds, workers, [11, 12, 11])
    # The reference: the same dataset read in the main process, no worker at all.
    ref = build_loader(ds, 4, 0, train=True, seed=3)
    ref_a, ref_b = _epochs(ds, ref, [11, 12])
    assert torch.equal(a, ref_a) and torch.equal(b, ref_b) and torch.equal(a2, a)
    assert not torch.equal(a, b)


def test_batches_are_uint8_until_moved_to_the_device(tiny_cfg):
    dcfg = _data_cfg(tiny_cfg)
    ds = build_dataset(dcfg, dcfg["val_split"], train=False)
    batch = next(iter(build_loader(ds, 2, 0, train=False)))
    assert batch["images"].dtype == torch.uint8
    moved = move_batch(batch, torch.device("cpu"))
    assert moved["images"].dtype == torch.float32
    torch.testing.assert_close(moved["images"], normalize_images(batch["images"]))
    assert not build_loader(ds, 2, 0, train=False).pin_memory



def test_cpu_loaders_do_not_pin(tiny_cfg, tmp_path):
    from mtvision.engine.trainer import Trainer

    trainer = Trainer(tiny_cfg, tmp_path / "run", device="cpu", progress=False)
    assert not trainer.train_loader.pin_memory and not trainer.val_loader.pin_memory


@pytest.mark.cuda
def test_cuda_batches_come_from_pinned_memory(tiny_cfg, tmp_path):
    from mtvision.engine.trainer import Trainer

    trainer = Trainer(tiny_cfg, tmp_path / "run", device="cuda", progress=False)
    assert trainer.train_loader.pin_memory and torch.backends.cudnn.benchmark
    batch = next(iter(trainer.train_loader))
    assert batch["images"].is_pinned()
    moved = move_batch(batch, trainer.device)
    assert moved["images"].is_cuda and moved["images"].dtype == torch.float32
