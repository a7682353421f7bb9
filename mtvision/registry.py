"""Name -> builder registries for the pluggable parts (backbones, necks, heads, balancers).

A new part plugs in with a decorator, without editing the core::

    @HEADS.register("fcos")
    class FCOSHead(TaskHead): ...

A family of names can be served by one builder with ``register_prefix``: ``timm:convnext_tiny``
calls the ``timm`` builder with ``"convnext_tiny"`` as its first argument.

``Registry.build(cfg)`` checks the options in ``cfg`` against the builder's signature, so a
misspelled option is an error naming the option and the closest valid one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the key and what is wrong."""


def closest(name: str, candidates: list[str]) -> str:
    """A ' (did you mean X?)' suffix for the closest candidate, or '' when none is close."""
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Maps names to classes or functions of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._prefixes: dict[str, tuple[Callable[..., Any], Callable[[str], None] | None]] = {}

    def register(self, name: str | None = None
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__.lower()
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def register_prefix(self, prefix: str, builder: Callable[..., Any],
                        check: Callable[[str], None] | None = None) -> None:
        """Serve every name ``PREFIX:rest`` with ``builder(rest, **options)``; ``check(rest)``
        (run by ``get``) raises ConfigError for a ``rest`` the family does not have."""
        if prefix in self._prefixes:
            raise KeyError(f"{self.kind} prefix '{prefix}:' is registered twice")
        self._prefixes[prefix] = (builder, check)

    def _prefixed(self, name: str) -> tuple[Callable[..., Any], str] | None:
        prefix, sep, rest = str(name).partition(":")
        if not sep or prefix not in self._prefixes:
            return None
        builder, check = self._prefixes[prefix]
        if check is not None:
            check(rest)
        return functools.partial(builder, rest), rest

    def unregister(self, name: str) -> None:
        """Remove ``name`` (plug-ins and tests that register a part for a while)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        """The registered names (without the prefix families)."""
        return sorted(self._items)

    def families(self) -> list[str]:
        """The prefix families, as ``PREFIX:<name>``."""
        return [f"{p}:<name>" for p in sorted(self._prefixes)]

    def __contains__(self, name: str) -> bool:
        """Registered, or of a prefix family (whose ``check`` runs in ``get``)."""
        prefix, sep, _ = str(name).partition(":")
        return name in self._items or bool(sep) and prefix in self._prefixes

    def get(self, name: str) -> Callable[..., Any]:
        if name in self._items:
            return self._items[name]
        found = self._prefixed(name)
        if found is None:
            raise ConfigError(
                f"unknown {self.kind} '{name}'{closest(name, self.names())}; "
                f"available: {', '.join(self.names() + self.families())}"
            )
        return found[0]

    def option_names(self, name: str, skip: tuple[str, ...] = ()) -> list[str] | None:
        """The keyword options a builder accepts, or None when it takes ``**kwargs``."""
        params = inspect.signature(self.get(name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return [n for n, p in params.items() if n not in skip and n != "self"
                and p.kind is not inspect.Parameter.VAR_POSITIONAL]

    def check_options(self, name: str, options: dict[str, Any], where: str,
                      skip: tuple[str, ...] = ()) -> None:
        """Raise ConfigError for an option the builder does not accept."""
        valid = self.option_names(name, skip)
        if valid is None:
            return
        for key in options:
            if key not in valid:
                raise ConfigError(
                    f"unknown option '{where}.{key}' for {self.kind} '{name}'"
                    f"{closest(key, valid)}; valid: {', '.join(valid)}"
                )

    def build(self, cfg: dict[str, Any], where: str = "", **extra: Any) -> Any:
        """Build from ``{"name": ..., **options}``; ``extra`` are arguments the caller supplies."""
        cfg = dict(cfg)
        if "name" not in cfg:
            raise ConfigError(
                f"'{where or self.kind}' needs a 'name' (one of {', '.join(self.names())})")
        name = cfg.pop("name")
        self.check_options(name, cfg, where or self.kind, skip=tuple(extra))
        return self.get(name)(**extra, **cfg)


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
BALANCERS = Registry("balancer")
DATASETS = Registry("dataset")
SHARING = Registry("sharing architecture")
