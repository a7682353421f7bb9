"""Config loading: _base_ inheritance, overrides, validation errors."""

from pathlib import Path

import pytest
import yaml

from mtvision.config import load_config, parse_override, save_config
from mtvision.registry import ConfigError

BASE = {
    "model": {"backbone": {"name": "resnet18"}, "neck": {"name": "fpn", "channels": 32},
              "heads": {"seg": {"name": "fpn_seg", "num_classes": 5},
                        "cls": {"name": "linear", "num_classes": 4}}},
    "train": {"epochs": 3, "optimizer": {"lr": 0.01}},
}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def cfg_files(tmp_path):
    (tmp_path / "_base_").mkdir()
    write(tmp_path / "_base_" / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", {
        "_base_": ["_base_/base.yaml"], "train": {"epochs": 5}, "data": {"batch_size": 4}})
    return tmp_path, child


def test_inheritance_merges_and_fills_defaults(cfg_files):
    _, child = cfg_files
    cfg = load_config(child)
    assert cfg["train"]["epochs"] == 5                     # child wins
    assert cfg["train"]["optimizer"]["lr"] == 0.01         # from base, merged not replaced
    assert cfg["train"]["optimizer"]["name"] == "adamw"    # schema default
    assert cfg["data"]["batch_size"] == 4
    assert cfg["model"]["neck"] == {"name": "fpn", "channels": 32}
    assert set(cfg["model"]["heads"]) == {"seg", "cls"}


def test_overrides(cfg_files):
    _, child = cfg_files
    cfg = load_config(child, ["model.backbone.name=resnet50", "train.epochs=3",
                              "data.image_size=[64,96]", "model.heads.cls=null"])
    assert cfg["model"]["backbone"]["name"] == "resnet50"
    assert cfg["train"]["epochs"] == 3
    assert cfg["data"]["image_size"] == [64, 96]
    assert set(cfg["model"]["heads"]) == {"seg"}
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)


def test_unknown_key_names_key_file_and_closest(cfg_files):
    tmp, _ = cfg_files
    bad = write(tmp / "bad.yaml", {"_base_": ["_base_/base.yaml"], "train": {"epochz": 2}})
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert "train.epochz" in msg and "bad.yaml" in msg and "'epochs'" in msg


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "b.yaml", {"data": {"batchsize": 2}})
    child = write(tmp_path / "c.yaml", {"_base_": ["b.yaml"]})
    with pytest.raises(ConfigError, match=r"b\.yaml.*data\.batchsize.*'batch_size'"):
        load_config(child)


def test_unknown_head_option_and_name(cfg_files):
    _, child = cfg_files
    with pytest.raises(ConfigError, match=r"num_clases.*'num_classes'"):
        load_config(child, ["model.heads.seg.num_clases=3"])
    with pytest.raises(ConfigError, match=r"fpn_sge.*'fpn_seg'"):
        load_config(child, ["model.heads.seg.name=fpn_sge"])


def test_synthetic_options_follow_the_generator_signature(cfg_files):
    _, child = cfg_files
    cfg = load_config(child, ["data.synthetic={num_train: 8, num_val: 2}"])
    assert cfg["data"]["synthetic"] == {"num_train": 8, "num_val": 2}
    assert load_config(child)["data"]["synthetic"] is None
    with pytest.raises(ConfigError, match=r"data\.synthetic\.num_trian.*'num_train'"):
        load_config(child, ["data.synthetic={num_trian: 8}"])


def test_override_error_names_override(cfg_files):
    _, child = cfg_files
    with pytest.raises(ConfigError, match=r"override -o trian\.epochs=1.*'train'"):
        load_config(child, ["trian.epochs=1"])


def test_wrong_type_and_choice(cfg_files):
    _, child = cfg_files
    with pytest.raises(ConfigError, match=r"train\.epochs.*int.*str"):
        load_config(child, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train\.amp.*'bf16'"):
        load_config(child, ["train.amp=bf61"])
    with pytest.raises(ConfigError, match=r"neck\.channels.*got str"):
        load_config(child, ["model.neck.channels=wide"])


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match="broken.yaml.*invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(cfg_files, tmp_path):
    _, child = cfg_files
    cfg = load_config(child)
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(out) == cfg


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in root.glob("*.yaml"):
        load_config(path)


def test_a_changed_builder_name_drops_the_previous_builders_options(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("balancer: {name: fixed, weights: {det: 1.0, seg: 2.0}}\n"
                    "model:\n  backbone: {name: resnet18, frozen_stages: 2}\n"
                    "  heads: {cls: {name: linear, num_classes: 4, in_features: [c5]}}\n"
                    "train: {optimizer: {name: adamw, lr: 0.01}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nbalancer: {name: pcgrad}\n")
    cfg = load_config(child, ["model.backbone.name=resnet34", "balancer.mode=feature"])
    # Another method: fixed's weights would be an unknown key of pcgrad.
    assert cfg["balancer"] == {"name": "pcgrad", "mode": "feature"}
    assert cfg["model"]["backbone"]["name"] == "resnet34"
    assert "frozen_stages" not in cfg["model"]["backbone"]  # resnet18's 2 is not carried over
    # The same name keeps the options; sections that are not registry-built merge as before.
    cfg = load_config(base, ["balancer.name=fixed", "model.heads.cls.num_classes=3",
                             "train.optimizer.name=sgd"])
    assert cfg["balancer"]["weights"] == {"det": 1.0, "seg": 2.0}
    assert cfg["model"]["heads"]["cls"]["in_features"] == ["c5"]
    assert cfg["train"]["optimizer"]["lr"] == 0.01
