"""Backbones: every registered name builds and gives c2..c5 (c1) of the documented channels and
strides at two input sizes with gradients to its first layer; frozen stages, checkpointing
(same outputs, gradients and BatchNorm statistics), stochastic depth, ViT position-embedding
interpolation against a hand-made resampling, pretrained weights from files, bad options; and
the demo model trained one step through the Trainer on representative backbones."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import StochasticDepth

from mtvision.config import load_config
from mtvision.engine.trainer import Trainer
from mtvision.models import build_model
from mtvision.models.backbones.vit import (
    encoder_block,
    interpolate_pos_embedding,
    to_torchvision_layout,
)
from mtvision.registry import BACKBONES, ConfigError

# Channels of c1..c5 by hand (None: no stride-2 level), from the papers' tables.
CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512), "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048), "resnet101": (64, 256, 512, 1024, 2048),
    "convnext_tiny": (None, 96, 192, 384, 768), "convnext_small": (None, 96, 192, 384, 768),
    "mobilenet_v3_large": (16, 24, 40, 112, 960), "efficientnet_b0": (16, 24, 40, 112, 1280),
    "swin_t": (None, 96, 192, 384, 768), "swin_s": (None, 96, 192, 384, 768),
    "vit_b_16": (None, 256, 256, 256, 256), "vit_small": (None, 256, 256, 256, 256),
}
# One of each code path at two sizes; their larger siblings share it and run once.
SMALL = ["resnet18", "convnext_tiny", "mobilenet_v3_large", "efficientnet_b0", "swin_t",
         "vit_small"]
LARGE = ["resnet34", "resnet50", "resnet101", "convnext_small", "swin_s", "vit_b_16"]


def build(name: str, **options) -> nn.Module:
    return BACKBONES.build({"name": name, **options})


def expected_info(name: str) -> dict[str, tuple[int, int]]:
    """(channels, stride) of each level, by hand."""
    return {f"c{i + 1}": (c, 2 ** (i + 1)) for i, c in enumerate(CHANNELS[name]) if c}


def expected_shapes(name: str, h: int, w: int) -> dict[str, tuple[int, int, int]]:
    return {k: (c, h // s, w // s) for k, (c, s) in expected_info(name).items()}


def first_param(bb: nn.Module) -> nn.Parameter:
    return next(bb.stages()[0].parameters())


def check_forward_backward(name: str, bb: nn.Module, sizes: list[tuple[int, int]]) -> None:
    assert {k: tuple(v) for k, v in bb.feature_info.items()} == expected_info(name)
    for h, w in sizes:
        bb.zero_grad()
        out = bb(torch.randn(2, 3, h, w))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            k: (2, *s) for k, s in expected_shapes(name, h, w).items()}, (name, h, w)
        sum(v.square().mean() for v in out.values()).backward()
        grad = first_param(bb).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_shapes_at_two_sizes(name):
    sizes = [(64, 64), (96, 64)] if name.startswith("vit") else [(64, 64), (64, 96)]
    check_forward_backward(name, build(name), sizes)


@pytest.mark.parametrize("name", LARGE)
def test_larger_siblings_forward_backward(name):
    check_forward_backward(name, build(name), [(64, 64)])


def test_every_registered_backbone_is_covered():
    assert set(BACKBONES.names()) >= set(CHANNELS)
    assert set(SMALL) | set(LARGE) == set(CHANNELS)
    for name in CHANNELS:
        assert set(BACKBONES.option_names(name)) >= {"pretrained", "frozen_stages", "drop_path",
                                                     "checkpointing"}


def leaves(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if not list(x.children())]


@pytest.mark.parametrize("name,frozen", [("resnet18", 2), ("mobilenet_v3_large", 3),
                                         ("convnext_tiny", 2), ("vit_small", 2)])
def test_frozen_stages_get_no_gradient_and_keep_batch_norm_statistics(name, frozen):
    bb = build(name, frozen_stages=frozen).train()
    stages = bb.stages()
    frozen_params = {id(p) for m in stages[:frozen] for p in m.parameters()}
    assert frozen_params
    for m in stages[:frozen]:
        assert not any(x.training for x in leaves(m))
    for m in stages[frozen:]:
        assert all(x.training for x in leaves(m))
    bns = [m for s in stages[:frozen] for m in s.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    out = bb(torch.randn(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    for p in bb.parameters():
        assert (p.grad is None) == (id(p) in frozen_params)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    bb.eval().train()  # train() again re-freezes
    assert not any(x.training for m in stages[:frozen] for x in leaves(m))


def test_norm_eval_keeps_every_batch_norm_in_eval():
    bb = build("efficientnet_b0", norm_eval=True).train()
    bns = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert bb.layers[0].training


def count_calls(module: nn.Module) -> list[int]:
    """Calls of ``module``, counted on entry (a recomputation stops once it has what backward
    needs, so it may never return)."""
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name,options", [
    ("resnet18", {}), ("efficientnet_b0", {"drop_path": 0.2}), ("swin_t", {"drop_path": 0.2}),
    ("vit_small", {"drop_path": 0.2}),
])
def test_checkpointing_gives_the_same_outputs_gradients_and_statistics(name, options):
    torch.manual_seed(0)
    plain = build(name, **options).train()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpointing = True
    x = torch.randn(2, 3, 64, 64)
    vit = name.startswith("vit")
    block = (lambda bb: bb.blocks[5].ln_1) if vit else (lambda bb: bb.layers[1])
    results = []
    for bb in (plain, ckpt):
        calls = count_calls(block(bb))
        torch.manual_seed(1)  # the same stochastic depth draws
        out = bb(x)
        sum((v * torch.linspace(0, 1, v.numel()).view_as(v)).sum()
            for v in out.values()).backward()
        grads = [p.grad.clone() for p in bb.parameters()]
        results.append((out, grads, calls[0]))
    (out_p, grads_p, calls_p), (out_c, grads_c, calls_c) = results
    assert (calls_p, calls_c) == (1, 2)  # recomputed in backward
    for k in out_p:
        torch.testing.assert_close(out_c[k], out_p[k], rtol=0, atol=0)
    for gp, gc in zip(grads_p, grads_c, strict=True):
        torch.testing.assert_close(gc, gp, rtol=1e-5, atol=1e-7)
    for bp, bc in zip(plain.buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(bp, bc)  # the recomputation does not update BatchNorm twice
    # No checkpointing without gradients or in eval mode.
    calls = count_calls(block(ckpt))
    with torch.no_grad():
        ckpt(x)
    ckpt.eval()(x)
    assert calls[0] == 2


def test_drop_path_rates_and_effect():
    rates = [m.p for m in build("convnext_tiny", drop_path=0.3).modules()
             if isinstance(m, StochasticDepth)]
    assert len(rates) == 18 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False))
    assert all(m.p == 0.0 for m in build("swin_t").modules() if isinstance(m, StochasticDepth))
    vit = build("vit_small", drop_path=0.5)
    assert vit.drop_rates[0] == 0.0 and vit.drop_rates[-1] == pytest.approx(0.5)
    x = torch.randn(2, 3, 32, 32)
    vit.train()
    assert not torch.equal(vit(x)["c4"], vit(x)["c4"])  # different draws
    vit.eval()
    assert torch.equal(vit(x)["c4"], vit(x)["c4"])


def test_vit_block_without_drop_path_is_torchvision_block():
    block = build("vit_small").blocks[3].train()
    tokens = torch.randn(2, 5, 384)
    torch.testing.assert_close(encoder_block(block, tokens), block(tokens), rtol=0, atol=0)


def test_position_embedding_interpolation():
    pos = torch.randn(1, 1 + 4 * 4, 8)
    assert interpolate_pos_embedding(pos, (4, 4)) is pos  # the pretraining grid: identity
    out = interpolate_pos_embedding(pos, (6, 3))
    grid = pos[0, 1:].reshape(4, 4, 8).permute(2, 0, 1)[None]  # [1, D, 4, 4]
    ref = F.interpolate(grid, size=(6, 3), mode="bicubic", align_corners=False)
    assert out.shape == (1, 1 + 18, 8)
    assert torch.equal(out[:, 0], pos[:, 0])  # the class token's embedding is kept
    torch.testing.assert_close(out[0, 1:].reshape(6, 3, 8), ref[0].permute(1, 2, 0))
    # The token at row r, column c is the resampled grid's (r, c).
    torch.testing.assert_close(out[0, 1 + 2 * 3 + 1], ref[0, :, 2, 1])


def test_vit_input_size_must_be_divisible_by_the_patch_size():
    with pytest.raises(ValueError, match="64x72 is not divisible by the patch size 16"):
        build("vit_small")(torch.randn(1, 3, 64, 72))


def small_vit(image_size: int = 224) -> torchvision.models.VisionTransformer:
    return torchvision.models.VisionTransformer(image_size, 16, 12, 6, 384, 1536)


def test_vit_from_a_torchvision_file_matches_torchvision_at_the_pretraining_size(tmp_path):
    torch.manual_seed(0)
    ref = small_vit().eval()
    path = tmp_path / "vit_s.pth"
    torch.save(ref.state_dict(), path)
    bb = build("vit_small", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = ref.encoder(torch.cat([ref.class_token, ref._process_input(x)], dim=1))
        ours = bb.embed(x)
        for block in bb.blocks:
            ours = encoder_block(block, ours)
        ours = bb.norm(ours)
    torch.testing.assert_close(ours, tokens)
    # The pyramid is new; a second load of the same file gives the same encoder.
    again = build("vit_small", pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(bb.blocks.parameters(),
                                                 again.blocks.parameters(), strict=True))


def test_vit_from_a_timm_file_on_another_grid(tmp_path):
    ref = small_vit(image_size=96)  # a 6 x 6 pretraining grid
    sd = ref.state_dict()
    timm = {"patch_embed.proj.weight": sd["conv_proj.weight"],
            "patch_embed.proj.bias": sd["conv_proj.bias"], "cls_token": sd["class_token"],
            "pos_embed": sd["encoder.pos_embedding"], "norm.weight": sd["encoder.ln.weight"],
            "norm.bias": sd["encoder.ln.bias"]}
    names = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
             "self_attention.in_proj_bias": "attn.qkv.bias",
             "self_attention.out_proj": "attn.proj", "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    for key, value in sd.items():
        if key.startswith("encoder.layers."):
            _, _, layer, rest = key.split(".", 3)
            for tv, tm in names.items():
                if rest.startswith(tv):
                    timm[f"blocks.{layer.rsplit('_', 1)[1]}.{tm}{rest[len(tv):]}"] = value
    assert len(timm) == len(sd) - 2  # all but the classifier
    assert to_torchvision_layout(timm).keys() == sd.keys() - {"heads.head.weight",
                                                              "heads.head.bias"}
    path = tmp_path / "deit_s.pth"
    torch.save({"model": timm}, path)
    bb = build("vit_small", pretrained=str(path))
    assert bb.embed.pos_embedding.shape == (1, 37, 384)
    assert torch.equal(bb.embed.pos_embedding, sd["encoder.pos_embedding"])
    assert torch.equal(bb.blocks[11].mlp[3].weight,
                       sd["encoder.layers.encoder_layer_11.mlp.3.weight"])
    assert bb(torch.randn(1, 3, 64, 96))["c5"].shape == (1, 256, 2, 3)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "convnext_tiny"])
def test_pretrained_local_file_round_trip(tmp_path, name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)()
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    a, b, fresh = build(name, pretrained=str(path)), build(name, pretrained=str(path)), build(name)
    ours = torch.cat([p.flatten() for m in a.stages() for p in m.parameters()])
    theirs = torch.cat([p.flatten() for p in ref.features.parameters()])
    assert torch.equal(ours, theirs)
    x = torch.randn(1, 3, 64, 64)
    a.eval(), b.eval(), fresh.eval()
    out_a, out_b, out_f = a(x), b(x), fresh(x)
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    assert not torch.equal(out_a["c5"], out_f["c5"])


def test_bad_pretrained_names_and_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown pretrained weights 'IMAGENET9' for swin_t"):
        build("swin_t", pretrained="IMAGENET9")
    with pytest.raises(ConfigError, match="ships no pretrained weights for vit_small"):
        build("vit_small", pretrained="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="not found"):
        build("efficientnet_b0", pretrained=str(tmp_path / "missing.pth"))
    other = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), other)
    with pytest.raises(ConfigError, match="do not fit mobilenet_v3_large: size mismatch"):
        build("mobilenet_v3_large", pretrained=str(other))
    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(1)}, junk)
    with pytest.raises(ConfigError, match="match no parameter of convnext_tiny"):
        build("convnext_tiny", pretrained=str(junk))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        build("resnet18", pretrained=str(bad))


@pytest.mark.parametrize("name,options,message", [
    ("convnext_tiny", {"frozen_stages": 6}, "frozen_stages must be an integer in 0..5"),
    ("swin_t", {"frozen_stages": -1}, "frozen_stages must be an integer"),
    ("vit_small", {"frozen_stages": 1.5}, "frozen_stages must be an integer"),
    ("efficientnet_b0", {"drop_path": 1.0}, r"drop_path must be a number in \[0, 1\)"),
    ("resnet50", {"drop_path": 0.1}, "resnet50: the architecture has no stochastic depth"),
    ("mobilenet_v3_large", {"drop_path": 0.1}, "has no stochastic depth"),
    ("swin_s", {"checkpointing": "yes"}, "checkpointing must be true or false"),
    ("vit_b_16", {"out_channels": 0}, "out_channels must be a positive integer"),
])
def test_invalid_options_are_config_errors(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build(name, **options)


def test_unknown_option_and_name_are_config_errors():
    with pytest.raises(ConfigError, match="unknown option 'model.backbone.norm_eval'"):
        build_model({"backbone": {"name": "convnext_tiny", "norm_eval": True},
                     "heads": {"cls": {"name": "linear", "num_classes": 2}}})
    with pytest.raises(ConfigError, match="unknown backbone 'convnext_t'.*convnext_tiny"):
        BACKBONES.build({"name": "convnext_t"})


NO_C1 = ("convnext", "swin", "vit")


@pytest.mark.parametrize("name", [
    "convnext_tiny", "vit_small", "mobilenet_v3_large",
    *[pytest.param(n, marks=pytest.mark.slow) for n in CHANNELS
      if n not in ("convnext_tiny", "vit_small", "mobilenet_v3_large", "resnet18")],
])
def test_demo_model_trains_a_step(repo_root, shapes_root, overrides_for, tmp_path, name):
    extra = [f"model.backbone.name={name}", "data.batch_size=2", "train.max_iters=1"]
    if name.startswith(NO_C1):  # HED's default in_features start at c1 (stride 2)
        extra.append("model.heads.edge.in_features=[p2, p3, p4, p5]")
    cfg = load_config(repo_root / "configs" / "demo.yaml",
                      [*overrides_for(shapes_root, iters=1), *extra])
    tr = Trainer(cfg, tmp_path, device="cpu", progress=False)
    first = first_param(tr.model.backbone)
    before = first.detach().clone()
    stats = tr.train_step(next(iter(tr.train_loader)))
    assert stats is not None
    assert set(tr.model.task_names) <= set(stats)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in stats.values())
    assert not torch.equal(before, first.detach())
