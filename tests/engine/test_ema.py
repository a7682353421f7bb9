"""Model EMA (``train.ema``): the averaged weights follow the formula, are what evaluation,
inference and export load, and a resumed run keeps them bit-exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtvision.engine.checkpoint import load_checkpoint, load_weights
from mtvision.engine.ema import ModelEMA, swapped_weights
from mtvision.engine.trainer import Trainer


def test_ema_of_a_known_parameter_sequence_equals_the_formula():
    model = nn.BatchNorm1d(2)  # a parameter, float buffers and an integer buffer
    ema = ModelEMA(model, decay=0.9, warmup=3)
    expected = model.weight.detach().double().clone()
    for t, value in enumerate([1.0, -2.0, 5.0, 0.5, 3.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
            model.num_batches_tracked.fill_(10 * t)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-t / 3))  # written out here, independently of decay_at
        expected = d * expected + (1 - d) * value
        torch.testing.assert_close(ema.weights()["weight"].double(), expected, rtol=1e-6,
                                   atol=1e-6)
        assert int(ema.weights()["num_batches_tracked"]) == 10 * t  # copied, not averaged
    assert ema.updates == 5


def test_without_warmup_the_decay_is_constant():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, warmup=0)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    ema.update(model)
    assert float(ema.weights()["weight"]) == pytest.approx(3.0)  # 0 -> 2 -> 3


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="0 < decay < 1"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)


def test_swapped_weights_restores_the_model():
    model = nn.Linear(2, 1)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    other = {k: torch.zeros_like(v) for k, v in own.items()}
    with swapped_weights(model, other):
        assert float(model.weight.abs().sum()) == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k])


def _cfg(tiny_cfg, iters):
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "max_iters": iters, "checkpoint_iters": 1,
                                 "ema": {"decay": 0.9, "warmup": 2}}}
    return cfg


class Killed(Exception):
    pass


def test_ema_is_saved_restored_on_resume_and_loaded_for_evaluation(tiny_cfg, tmp_path,
                                                                   monkeypatch):
    straight = Trainer(_cfg(tiny_cfg, 4), tmp_path / "a", device="cpu", progress=False)
    straight.fit()
    save = Trainer.save

    def save_then_die(self, name="last.pt"):
        out = save(self, name)
        if self.iteration == 2:
            raise Killed  # the run dies right after the checkpoint of iteration 2
        return out

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(Killed):
        Trainer(_cfg(tiny_cfg, 4), tmp_path / "b", device="cpu", progress=False).fit()
    monkeypatch.setattr(Trainer, "save", save)
    resumed = Trainer(_cfg(tiny_cfg, 4), tmp_path / "b", resume=True, device="cpu",
                      progress=False)
    assert resumed.ema.updates == 2
    resumed.fit()
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    for k, v in a["ema"]["weights"].items():
        assert torch.equal(v, b["ema"]["weights"][k]), k
    # The EMA differs from the raw weights, and evaluation / inference / export load it.
    raw, avg = a["model"], a["ema"]["weights"]
    assert any(not torch.equal(raw[k], avg[k]) for k in raw if raw[k].is_floating_point())
    model = straight.model
    load_weights(model, a, "last.pt")
    assert all(torch.equal(v, avg[k]) for k, v in model.state_dict().items())
    load_weights(model, a, "last.pt", ema=False)
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())
