"""One small call of every kernel family, and a spy on every launched Triton kernel: shared by
the CPU (interpreter) and CUDA launch tests."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from mtvision import kernels

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
        mod = importlib.import_module(f"mtvision.kernels.jit.{module}")
        kernel = getattr(mod, name)

        class Spy:
            def __getitem__(self, grid, kernel=kernel, name=name):
                on_launch(name)
                return kernel[grid]

        monkeypatch.setattr(mod, name, Spy())


def family_calls(device: torch.device | str, backend: str = "triton",
                 dtype: torch.dtype = torch.float32
                 ) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """Name -> a call of that family on small ``device`` tensors (forward and backward where
    the family has a gradient) returning its results and gradients. The inputs depend on the
    name only, so two backends' calls can be compared."""
    g = torch.Generator()

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    def labels(high, *shape):
        return torch.randint(0, high, shape, generator=g).to(device)

    def focal():
        g.manual_seed(1)
        x = rand(6, 5).requires_grad_()
        loss = kernels.sigmoid_focal_loss(x, (labels(2, 6, 5)).to(dtype), reduction="sum",
                                          backend=backend)
        loss.backward()
        return [loss, x.grad]

    def ce():
        g.manual_seed(2)
        x = rand(2, 3, 4, 4).requires_grad_()
        loss = kernels.seg_cross_entropy(x, labels(3, 2, 4, 4), backend=backend)
        loss.backward()
        return [loss, x.grad]

    def edge():
        g.manual_seed(3)
        x = rand(2, 1, 4, 4).requires_grad_()
        loss = kernels.edge_bce(x, labels(2, 2, 4, 4), backend=backend)
        loss.backward()
        return [loss, x.grad]

    def dense():
        g.manual_seed(4)
        s, e = rand(2, 3, 4, 4).requires_grad_(), rand(2, 2, 4, 4).requires_grad_()
        seg, edge_losses = kernels.dense_losses(s, labels(3, 2, 4, 4), e, labels(2, 2, 4, 4),
                                                backend=backend)
        (seg + edge_losses.sum()).backward()
        return [seg, edge_losses, s.grad, e.grad]

    def combine():
        g.manual_seed(5)
        s = torch.zeros(3, device=device, requires_grad=True)
        total = kernels.combine_losses(rand(3).float().abs(), log_vars=s, backend=backend)
        total.backward()
        return [total, s.grad]

    def gram():
        g.manual_seed(6)
        return [kernels.gram(rand(3, 100), backend=backend)]

    def rows():
        g.manual_seed(7)
        return [kernels.weighted_rows(torch.ones(3, device=device), rand(3, 100),
                                      backend=backend)]

    def drop():
        g.manual_seed(8)
        G = rand(3, 100)
        return [kernels.graddrop(G, u=torch.rand(100, generator=g).to(device), backend=backend)]

    return {"focal": focal, "cross_entropy": ce, "balanced_bce": edge, "multi_head": dense,
            "combine": combine, "gram": gram, "weighted_rows": rows, "graddrop": drop}
