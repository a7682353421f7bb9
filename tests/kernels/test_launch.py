"""Every kernel launch goes through ``kernels._common.launch``: it enters the tensors' CUDA
device (Triton launches on the current device, which need not be the tensors') and its grids
stay within CUDA's limits at any input size (pixel blocks flattened onto grid axis 0)."""

from __future__ import annotations

import contextlib
import importlib
from types import SimpleNamespace

import mtvision.kernels._common as common
import pytest
import torch
from mtvision.kernels._common import GRID_LIMITS, check_grid
from mtvision.kernels.balanced_bce import edge_config
from mtvision.kernels.combine import combine_config
from mtvision.kernels.cross_entropy import ce_config
from mtvision.kernels.focal import focal_config
from mtvision.kernels.gram import gram_config, rows_config
from mtvision.kernels.multi_head import dense_config

from tests.kernels.launches import family_calls, spy_kernels

# CUDA's grid limits, written out here rather than read from the code under test.
AXIS0_MAX, AXIS12_MAX = 2**31 - 1, 65535


def test_launch_device_enters_the_tensors_cuda_device(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def fake_device(dev):
        entered.append(torch.device(dev))
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    # Only the device of the tensor is read: a stand-in for a tensor on the second GPU.
    with common.launch_device(SimpleNamespace(device=torch.device("cuda", 1))):
        pass
    assert entered == [torch.device("cuda", 1)]
    with common.launch_device(torch.zeros(1)):  # CPU (the interpreter): nothing entered
        pass
    assert entered == [torch.device("cuda", 1)]


def test_every_family_launches_through_the_device_context(monkeypatch):
    state = {"inside": None}
    launches = []
    real = common.launch_device

    @contextlib.contextmanager
    def recording(tensor):
        with real(tensor):
            state["inside"] = tensor.device
            yield
            state["inside"] = None

    monkeypatch.setattr(common, "launch_device", recording)
    spy_kernels(monkeypatch, lambda name: launches.append((name, state["inside"])))
    for family, call in family_calls("cpu").items():
        before = len(launches)
        call()
        assert len(launches) > before, f"{family} launched no kernel"
    assert launches and all(dev == torch.device("cpu") for _, dev in launches), launches


def test_launch_refuses_a_grid_over_the_limits():
    with pytest.raises(ValueError, match="axis 1"):
        check_grid((1, 65536))
    with pytest.raises(ValueError, match="axis 0"):
        check_grid((2**31,))
    check_grid((2**31 - 1, 65535, 65535))
    assert GRID_LIMITS == (AXIS0_MAX, AXIS12_MAX, AXIS12_MAX)


def within_limits(grid: tuple[int, ...]) -> bool:
    return (len(grid) <= 3 and 0 < grid[0] <= AXIS0_MAX
            and all(0 < n <= AXIS12_MAX for n in grid[1:]))


@pytest.mark.parametrize("interpret", [False, True])
def test_grids_of_large_inputs_fit_cuda_limits(interpret, monkeypatch):
    # 8 images of 4096 x 4096 with 150 classes (ADE20K's count): 16.8 M pixels per image.
    N, C, K, S = 8, 150, 5, 4096 * 4096
    grids = {}
    for c in (21, C):  # single-tile and looped class counts
        single, block_c, block_p, grid = ce_config(N, c, S, interpret)
        assert grid[0] * block_p >= N * S  # every pixel has a program
        grids[f"ce_{c}"] = grid
        grids[f"dense_{c}"] = dense_config(N, S, c, K, interpret)[3]
    block_p, grids["edge"] = edge_config(N, S, interpret)
    assert grids["edge"][0] * block_p >= N * S
    grids["dense_edge_only"] = dense_config(N, S, None, K, interpret)[3]
    M = N * C * S  # focal over every logit of the same tensor
    block, grids["focal"] = focal_config(M, interpret)
    assert grids["focal"][0] * block >= M
    grids["combine"] = combine_config(16)[1]
    # The task-gradient matrix: 16 tasks, 500 M shared parameters, an H100's 132 SMs.
    # (the module: ``kernels.gram`` the attribute is the function)
    gram_module = importlib.import_module("mtvision.kernels.gram")
    monkeypatch.setattr(gram_module, "_sm_count", lambda index: 132)
    T, P = 16, 500_000_000
    t_pad, block_p, programs, per_program = gram_config(T, P, torch.device("cuda", 0),
                                                        interpret=interpret)
    assert programs * per_program * block_p >= P
    grids["gram"] = (programs,)
    block_t, block_p, grids["rows"] = rows_config(T, P, interpret)
    assert grids["rows"][0] * block_p >= P
    bad = {k: g for k, g in grids.items() if not within_limits(g)}
    assert not bad, f"grids over CUDA's limits: {bad}"
