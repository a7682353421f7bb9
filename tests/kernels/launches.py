"""One small call of every kernel family, and a spy on every launched Triton kernel: shared by
the CPU (interpreter) and CUDA launch tests."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

import kernels

# (jit module, kernel) of every kernel a family launches.
LAUNCHED = [
    ("focal", "focal_kernel"),
    ("cross_entropy", "ce_kernel"),
    ("balanced_bce", "edge_bce_kernel"),
    ("multi_head", "dense_kernel"),
    ("combine", "combine_kernel"),
    ("gram", "gram_kernel"),
    ("gram", "weighted_rows_kernel"),
    ("gram", "graddrop_kernel"),
]


def spy_kernels(monkeypatch, on_launch: Callable[[str], None]) -> None:
    """Replace every launched kernel by a proxy that calls ``on_launch(name)`` when it is
    launched (``kernel[grid]``), then launches the real kernel."""
    for module, name in LAUNCHED:
        mod = importlib.import_module(f"kernels.jit.{module}")
        kernel = getattr(mod, name)

        class Spy:
            def __getitem__(self, grid, kernel=kernel, name=name):
                on_launch(name)
                return kernel[grid]

        monkeypatch.setattr(mod, name, Spy())


def family_calls(device: torch.device | str, backend: str = "triton",
                 dtype: torch.dtype = torch.float32) -> dict[str, Callable[[], None]]:
    """Name -> a call of that family on small ``device`` tensors (forward and backward where
    the family has a gradient)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    def labels(high, *shape):
        return torch.randint(0, high, shape, generator=g).to(device)

    def focal():
        x = rand(6, 5).requires_grad_()
        kernels.sigmoid_focal_loss(x, (labels(2, 6, 5)).to(dtype), reduction="sum",
                                   backend=backend).backward()

    def ce():
        x = rand(2, 3, 4, 4).requires_grad_()
        kernels.seg_cross_entropy(x, labels(3, 2, 4, 4), backend=backend).backward()

    def edge():
        x = rand(2, 1, 4, 4).requires_grad_()
        kernels.edge_bce(x, labels(2, 2, 4, 4), backend=backend).backward()

    def dense():
        s, e = rand(2, 3, 4, 4).requires_grad_(), rand(2, 2, 4, 4).requires_grad_()
        seg, edge_losses = kernels.dense_losses(s, labels(3, 2, 4, 4), e, labels(2, 2, 4, 4),
                                                backend=backend)
        (seg + edge_losses.sum()).backward()

    def combine():
        s = torch.zeros(3, device=device, requires_grad=True)
        kernels.combine_losses(rand(3).float().abs(), log_vars=s, backend=backend).backward()

    def gram():
        kernels.gram(rand(3, 100), backend=backend)

    def rows():
        kernels.weighted_rows(torch.ones(3, device=device), rand(3, 100), backend=backend)

    def drop():
        kernels.graddrop(rand(3, 100), u=torch.rand(100, generator=g).to(device),
                         backend=backend)

    return {"focal": focal, "cross_entropy": ce, "balanced_bce": edge, "multi_head": dense,
            "combine": combine, "gram": gram, "weighted_rows": rows, "graddrop": drop}
