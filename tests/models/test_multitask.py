"""The multi-task model: registry building, feature shapes, head subsets, partial labels,
pretrained weights from a file, and the offline error for a weights name."""

import urllib.error

import pytest
import torch

from mtvision.models import build_model
from mtvision.registry import ConfigError

HEADS = {"det": {"name": "fcos", "num_classes": 3}, "seg": {"name": "fpn_seg", "num_classes": 4},
         "edge": {"name": "hed"}, "cls": {"name": "linear", "num_classes": 2}}


def model_cfg(heads=HEADS, **backbone):
    return {"backbone": {"name": "resnet18", **backbone}, "neck": {"name": "fpn", "channels": 32},
            "heads": heads}


def targets_for(b, h, w):
    return {
        "det": [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
                for _ in range(b)],
        "seg": torch.randint(0, 4, (b, h, w)),
        "edge": torch.randint(0, 2, (b, h, w)),
        "cls": torch.randint(0, 2, (b,)),
    }


def test_features_have_documented_strides_and_channels():
    m = build_model(model_cfg())
    x = torch.randn(2, 3, 64, 96)
    feats = m.extract(x)
    info = {**m.backbone.feature_info, **m.neck.feature_info}
    assert set(feats) == {"c1", "c2", "c3", "c4", "c5", "p2", "p3", "p4", "p5"}
    for name, f in feats.items():
        assert f.shape[1] == info[name].channels
        assert f.shape[-2:] == (64 // info[name].stride, 96 // info[name].stride), name


def test_resnet50_channels():
    m50 = build_model({**model_cfg({"cls": HEADS["cls"]}), "backbone": {"name": "resnet50"}})
    assert m50.backbone.feature_info["c5"].channels == 2048
    assert m50(torch.randn(1, 3, 64, 64))["cls"].shape == (1, 2)


def test_head_subsets_and_partial_labels():
    m = build_model(model_cfg({"seg": HEADS["seg"], "cls": HEADS["cls"]}))
    assert m.task_names == ["seg", "cls"]
    x = torch.randn(3, 3, 64, 64)
    out = m(x)
    t = targets_for(3, 64, 64)
    present = {"seg": torch.tensor([True, False, True]), "cls": torch.tensor([False] * 3)}
    losses = m.losses(out, t, present)
    assert set(losses) == {"seg"}  # no image labels cls: its loss does not count
    # Changing the labels of the image without seg labels leaves the loss unchanged.
    t2 = {**t, "seg": t["seg"].clone()}
    t2["seg"][1] = (t2["seg"][1] + 1) % 4
    assert torch.equal(m.losses(out, t2, present)["seg"]["ce"], losses["seg"]["ce"])


def test_all_heads_forward_backward_and_predict():
    m = build_model(model_cfg())
    x = torch.randn(2, 3, 64, 64)
    out = m(x)
    present = {k: torch.tensor([True, True]) for k in HEADS}
    losses = m.losses(out, targets_for(2, 64, 64), present)
    total = sum(v for parts in losses.values() for v in parts.values())
    total.backward()
    assert all(p.grad is not None for p in m.shared_parameters())
    preds = m.predict(x)
    assert preds["seg"][0].shape == (64, 64) and preds["edge"][0].shape == (64, 64)
    assert preds["det"][0]["boxes"].shape[1] == 4
    assert 0 <= preds["cls"][0]["label"] < 2


def test_head_under_wrong_task_is_an_error():
    with pytest.raises(ConfigError, match=r"model\.heads\.seg.*'edge' head"):
        build_model(model_cfg({"seg": {"name": "hed"}}))


def test_pretrained_from_local_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = build_model(model_cfg({"cls": HEADS["cls"]}, pretrained=str(path)))
    assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.backbone.layers[3][1].conv2.weight, ref.layer4[1].conv2.weight)


def test_pretrained_name_offline_says_how_to_pass_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=r"offline.*pretrained to the file path"):
        build_model(model_cfg({"cls": HEADS["cls"]}, pretrained="IMAGENET1K_V1"))
    with pytest.raises(ConfigError, match="unknown pretrained weights 'IMAGENET9'"):
        build_model(model_cfg({"cls": HEADS["cls"]}, pretrained="IMAGENET9"))
    with pytest.raises(ConfigError, match="not found"):
        build_model(model_cfg({"cls": HEADS["cls"]}, pretrained=str(tmp_path / "x.pth")))
