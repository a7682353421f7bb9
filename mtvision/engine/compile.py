"""``train.compile``: ``torch.compile`` of the model's parts, in place.

The backbone, the neck and each head are compiled (``nn.Module.compile``: the parameters and
the state-dict keys stay those of the eager model, so checkpoints are interchangeable). The
losses are not: the fused Triton losses are custom autograd functions that a graph would only
break around. Compilation happens on the first step (tens of seconds on a CPU, a few on a GPU)
and pays on long GPU runs; it is off by default.
"""

from __future__ import annotations

from torch import nn

from mtvision.registry import ConfigError


def compile_backend(option: bool | str) -> str | None:
    """The ``torch.compile`` backend that ``train.compile`` names (``true``: inductor), or
    None when off; an unknown backend is a ConfigError."""
    if option is False:
        return None
    backend = "inductor" if option is True else str(option)
    import torch._dynamo

    available = torch._dynamo.list_backends(exclude_tags=())
    if backend not in available:
        raise ConfigError(f"train.compile '{backend}' is not a torch.compile backend; use true "
                          f"(inductor), false, or one of {', '.join(sorted(available))}")
    return backend


def compile_model(model: nn.Module, backend: str) -> list[str]:
    """Compile ``model.backbone``, ``model.neck`` and every head in place (per-task copies of a
    ModuleDict each); returns the names of the compiled parts."""
    compiled = []
    parts = [("backbone", model.backbone), ("neck", model.neck),
             *((f"heads.{t}", h) for t, h in model.heads.items())]
    for name, part in parts:
        if part is None:
            continue
        units = (part.items() if isinstance(part, nn.ModuleDict) else [("", part)])
        for sub, module in units:
            module.compile(backend=backend)
            compiled.append(f"{name}.{sub}" if sub else name)
    return compiled


__all__ = ["compile_backend", "compile_model"]
