"""The ``mtvision`` console command (mtvision.commands) and configs by name (mtvision.config):
help, version, dispatch, the tools/*.py wrappers, shipped config names and ``_base_`` paths."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import mtvision
from mtvision import commands
from mtvision.config import config_dir, list_configs, load_config, resolve_config
from mtvision.registry import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["train", "eval", "infer", "export", "benchmark", "convert", "demo", "configs"]
TOOLS = {"train": "train", "eval": "eval", "infer": "infer", "export": "export",
         "benchmark": "benchmark", "convert": "convert_dataset", "demo": "demo"}


def test_help_lists_every_subcommand(capsys):
    assert commands.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0]
              .splitlines()]
    assert listed == SUBCOMMANDS
    assert commands.main([]) == 2  # no command: the help on stderr, status 2
    assert "usage: mtvision COMMAND" in capsys.readouterr().err


def test_version_names_each_component(capsys, monkeypatch):
    assert commands.main(["--version"]) == 0
    lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["mtvision"] == mtvision.__version__
    assert lines["torch"] == torch.__version__
    assert lines["triton"] == metadata.version("triton")
    assert lines["CUDA"].startswith(torch.version.cuda or "absent")

    real = metadata.version

    def without_triton(name: str) -> str:
        if name == "triton":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", without_triton)
    assert commands.main(["-V"]) == 0
    assert "triton absent" in capsys.readouterr().out.splitlines()


def test_unknown_command_is_one_line(capsys):
    assert commands.main(["trian", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'trian' (did you mean 'train'?)" in err


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        commands.main([name, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mtvision {name}")


def test_tools_scripts_are_the_same_commands():
    """``python tools/X.py --help`` and ``python -m mtvision X --help`` print the same help,
    but for the program name (run as a user would, in fresh processes)."""
    env = {"PYTHONPATH": str(ROOT), "COLUMNS": "100", "PATH": ""}
    for name in ("train", "convert"):
        tool = subprocess.run([sys.executable, f"tools/{TOOLS[name]}.py", "--help"], cwd=ROOT,
                              capture_output=True, text=True, env=env, check=True).stdout
        cli = subprocess.run([sys.executable, "-m", "mtvision", name, "--help"], cwd=ROOT,
                             capture_output=True, text=True, env=env, check=True).stdout
        assert tool.startswith(f"usage: {TOOLS[name]}.py") and cli.startswith(
            f"usage: mtvision {name}")
        # After the usage lines (wrapped after the program name): description and options.
        body = tool.split("\n\n", 1)[1]
        assert body == cli.split("\n\n", 1)[1] and "--help" in body


def test_configs_lists_the_yaml_files_outside_base(capsys):
    expected = sorted(str(p.relative_to(ROOT / "configs").with_suffix(""))
                      for p in (ROOT / "configs").rglob("*.yaml")
                      if "_base_" not in p.parts)
    assert config_dir() == ROOT / "configs"  # a checkout: the repository's folder
    assert list_configs() == expected
    assert {"demo", "benchmarks/nyuv2_resnet50"} <= set(expected)
    assert commands.main(["configs"]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_config_names_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: only the shipped names can resolve
    shipped = ROOT / "configs"
    assert resolve_config("demo") == shipped / "demo.yaml"
    assert resolve_config("demo.yaml") == shipped / "demo.yaml"
    assert resolve_config("configs/demo.yaml") == shipped / "demo.yaml"  # the README's paths
    assert resolve_config("benchmarks/nyuv2_resnet50") == \
        shipped / "benchmarks" / "nyuv2_resnet50.yaml"
    cfg = load_config("benchmarks/nyuv2_resnet50")
    assert cfg["model"]["backbone"]["name"] == "resnet50"  # from its _base_ pieces
    with pytest.raises(ConfigError, match=r"no config named 'benchmarks/nyuv2_resnt50' \(did "
                                          r"you mean 'benchmarks/nyuv2_resnet50'\?\)"):
        resolve_config("benchmarks/nyuv2_resnt50")
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(tmp_path / "absent.yaml")


def test_a_path_wins_and_base_is_relative_to_the_file(tmp_path, monkeypatch):
    """A file of the same name as a shipped config is taken as given, and its ``_base_``
    entries are read next to it, not from the shipped folder."""
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "runtime.yaml").write_text("train: {epochs: 3, seed: 7}\n")
    (tmp_path / "demo.yaml").write_text("_base_: [_base_/runtime.yaml]\ntrain: {epochs: 5}\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config("demo.yaml") == Path("demo.yaml")
    cfg = load_config("demo.yaml")
    assert (cfg["train"]["epochs"], cfg["train"]["seed"]) == (5, 7)
    assert cfg["model"]["backbone"]["name"] == "resnet18"  # the schema default, not the demo's
    assert load_config("demo")["model"]["heads"]  # the name still finds the shipped demo
