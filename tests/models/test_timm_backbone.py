"""timm backbones (model.backbone.name: timm:<model>): the strides of feature_info mapped onto
c1..c5, ViT-style models through the simple feature pyramid, a local pretrained file, frozen
stages, drop path, checkpointing and one training step of the demo config.

Every model is randomly initialised (nothing is downloaded); the references are timm's own
full models (``forward_intermediates``) holding the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")

from mtvision.config import load_config  # noqa: E402
from mtvision.models.backbones import TimmBackbone  # noqa: E402
from mtvision.models.backbones.vit import SimpleFeaturePyramid  # noqa: E402
from mtvision.registry import ConfigError  # noqa: E402


def _weights_file(tmp_path, name: str, seed: int = 0, **kwargs):
    """A full timm model (classifier included) and its state dict saved as a weights file."""
    torch.manual_seed(seed)
    full = timm.create_model(name, pretrained=False, **kwargs).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(full.state_dict(), path)
    return full, path


@pytest.mark.parametrize("name, levels", [
    ("test_convnext", ["c2", "c3", "c4", "c5"]),           # ConvNeXt: strides 4..32
    ("test_efficientnet", ["c1", "c2", "c3", "c4", "c5"]),  # EfficientNet: stride-2 map too
    ("regnetx_002", ["c1", "c2", "c3", "c4", "c5"]),        # RegNet
])
def test_cnn_levels_equal_timms_own_intermediates(tmp_path, name, levels):
    full, path = _weights_file(tmp_path, name)
    backbone = TimmBackbone(name, pretrained=str(path)).eval()
    assert list(backbone.feature_info) == levels
    assert [backbone.feature_info[k].stride for k in levels] == [2 ** int(k[1]) for k in levels]

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
        ref = full.forward_intermediates(x, intermediates_only=True)
    by_shape = {tuple(r.shape): r for r in ref}  # the last map of each shape
    for level in levels:
        info = backbone.feature_info[level]
        assert out[level].shape == (1, info.channels, 64 // info.stride, 96 // info.stride)
        torch.testing.assert_close(out[level], by_shape[tuple(out[level].shape)])


@pytest.mark.parametrize("name, kwargs", [
    ("test_vit", {}),                                  # patch 16
    ("vit_small_patch14_dinov2", {"depth": 3}),        # DINOv2 layout, patch 14, 3 blocks
])
def test_vit_style_models_use_the_simple_feature_pyramid(tmp_path, name, kwargs):
    full, path = _weights_file(tmp_path, name, dynamic_img_size=True, dynamic_img_pad=True,
                               **kwargs)
    backbone = TimmBackbone(name, pretrained=str(path), out_channels=32, kwargs=kwargs).eval()
    assert isinstance(backbone.pyramid, SimpleFeaturePyramid)  # vit.py's, not a copy
    assert {k: (v.channels, v.stride) for k, v in backbone.feature_info.items()} == {
        "c2": (32, 4), "c3": (32, 8), "c4": (32, 16), "c5": (32, 32)}

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
        last = full.forward_intermediates(x, indices=1, intermediates_only=True)[-1]
        # The reference: timm's last block on the stride-16 grid (DINOv2's 14 resampled).
        ref = backbone.pyramid(F.interpolate(last, size=(4, 6), mode="bilinear",
                                             align_corners=False))
    for level, stride in {"c2": 4, "c3": 8, "c4": 16, "c5": 32}.items():
        assert out[level].shape == (1, 32, 64 // stride, 96 // stride)
        torch.testing.assert_close(out[level], ref[level])


def test_frozen_stages_cnn_and_vit():
    cnn = TimmBackbone("test_convnext", frozen_stages=2).train()
    frozen = {n for n, p in cnn.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in cnn.named_parameters()
                      if n.startswith(("net.stem", "net.stages_0."))}
    assert frozen and not cnn.net.stages_0.training and cnn.net.stages_1.training

    vit = TimmBackbone("test_vit", frozen_stages=2).train()
    blocks = len(vit.net.model.blocks)
    trainable_blocks = {int(n.split(".")[3]) for n, p in vit.named_parameters()
                        if p.requires_grad and n.startswith("net.model.blocks.")}
    assert trainable_blocks == set(range(round(blocks / 4), blocks))
    for name in ("net.model.cls_token", "net.model.pos_embed",
                 "net.model.patch_embed.proj.weight"):
        assert not dict(vit.named_parameters())[name].requires_grad
    assert all(p.requires_grad for p in vit.pyramid.parameters())


def test_drop_path_is_timms_rate():
    backbone = TimmBackbone("test_convnext", drop_path=0.2)
    rates = [m.drop_prob for m in backbone.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)  # timm: linear from 0 to the rate


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_checkpointing_gives_the_same_gradients_and_statistics(name):
    torch.manual_seed(0)
    plain = TimmBackbone(name).train()
    ckpt = TimmBackbone(name, checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, ckpt):
        sum(v.square().mean() for v in model(x).values()).backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=n)
    if name == "test_resnet":
        # Our own loop over timm's FeatureListNet keeps BatchNorm statistics from counting the
        # recomputed forward pass a second time.
        for (n, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
            torch.testing.assert_close(a, b, msg=n)


def test_bad_names_and_options_are_config_errors(tmp_path, shapes_root, overrides_for,
                                                 repo_root):
    demo = repo_root / "configs" / "demo.yaml"
    with pytest.raises(ConfigError, match=r"unknown timm model 'convnext_tinny' \(did you mean "
                                          r"'timm:convnext_tiny'\?\)"):
        load_config(demo, ["model.backbone.name=timm:convnext_tinny"])
    with pytest.raises(ConfigError, match="unknown key 'model.backbone.frozen'"):
        load_config(demo, ["model.backbone={name: 'timm:test_convnext', frozen: 1}"])
    with pytest.raises(ConfigError, match="out_channels applies to single-scale"):
        TimmBackbone("test_convnext", out_channels=64)
    _, other = _weights_file(tmp_path, "test_resnet")
    with pytest.raises(ConfigError, match="do not fit timm:test_convnext"):
        TimmBackbone("test_convnext", pretrained=str(other))
    torch.save({"unrelated.weight": torch.ones(3)}, tmp_path / "unrelated.pth")
    with pytest.raises(ConfigError, match="match no parameter of timm:test_resnet"):
        TimmBackbone("test_resnet", pretrained=str(tmp_path / "unrelated.pth"))
    with pytest.raises(ConfigError, match="pretrained weights file not found"):
        TimmBackbone("test_convnext", pretrained=str(tmp_path / "none.pth"))


def test_demo_config_trains_one_step_with_a_timm_backbone(shapes_root, tmp_path, repo_root,
                                                          overrides_for):
    from tools import train as train_tool

    work = tmp_path / "timm"
    over = [*overrides_for(shapes_root, iters=1), "model.backbone={name: 'timm:test_convnext'}",
            "train.eval_interval=100"]
    argv = [str(repo_root / "configs" / "demo.yaml"), "--work-dir", str(work), "--no-progress",
            "--device", "cpu", *sum((["-o", o] for o in over), [])]
    assert train_tool.main(argv) == 0
    state = torch.load(work / "last.pt", map_location="cpu", weights_only=False)
    assert state["config"]["model"]["backbone"]["name"] == "timm:test_convnext"
    assert any(k.startswith("backbone.net.stages_3") for k in state["model"])
