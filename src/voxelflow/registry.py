"""Name → component registries with "did you mean" suggestions.

One :class:`Registry` exists per component kind (networks, losses, samplers, ...). Components
register under a unique name; a duplicate name is an error. A name containing ``:`` is a plugin
given by dotted import path (``mypkg.nets:MyNet``): it is imported only then, when the config
names it, never by scanning.

Example:
    >>> NETWORKS = Registry("network")
    >>> @NETWORKS.register("tiny", description="a tiny net")
    ... class Tiny: ...
    >>> NETWORKS.get("tiny") is Tiny
    True
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from voxelflow.errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component with a one-line description."""

    name: str
    obj: T
    description: str


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """Return a ``" Did you mean: a, b?"`` hint, or an empty string when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""


def import_object(path: str) -> object:
    """Import ``"package.module:attribute"`` (or ``"package.module.attribute"``).

    Raises:
        RegistryError: when the module cannot be imported or lacks the attribute.
    """
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise RegistryError(f"expected a plugin path 'package.module:Name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # report any import failure with the plugin named
        raise RegistryError(
            f"cannot import plugin module {module_name!r} (from {path!r}): {exc}"
        ) from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise RegistryError(f"plugin module {module_name!r} has no attribute {attr!r}") from exc
    return obj


def is_plugin_path(name: str) -> bool:
    """A plugin path contains ``:`` (``pkg.mod:Name``); registered names never do."""
    return ":" in name


class Registry(Generic[T]):
    """Components of one kind, looked up by name.

    Args:
        kind: human name of the kind, used in error messages ("network", "loss", ...).

    Example:
        >>> losses = Registry("loss")
        >>> @losses.register("l1", description="mean absolute error")
        ... def l1(a, b):
        ...     return abs(a - b)
        >>> losses.get("l1")(3, 5), losses.names()
        (2, ['l1'])
        >>> losses.get("l11")
        Traceback (most recent call last):
        ...
        voxelflow.errors.RegistryError: unknown loss 'l11'. Did you mean: 'l1'? ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str = "") -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        The description defaults to the first line of the object's docstring.

        Raises:
            RegistryError: when ``name`` is already registered.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, description: str = "") -> None:
        """Register ``obj`` under ``name`` (non-decorator form)."""
        if name in self._entries:
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: already registered by "
                f"{_qualname(self._entries[name].obj)}"
            )
        if is_plugin_path(name):
            raise RegistryError(f"{self.kind} names may not contain ':', got {name!r}")
        doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        self._entries[name] = Entry(name, obj, doc)

    def get(self, name: str) -> T:
        """Return the component registered as ``name``, or import a plugin path.

        Raises:
            RegistryError: unknown name (with suggestions) or failed plugin import.
        """
        if name in self._entries:
            return self._entries[name].obj
        if is_plugin_path(name):
            return import_object(name)  # type: ignore[return-value]
        known = sorted(self._entries)
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{suggest(name, known)} Known {self.kind}s: {', '.join(known)}"
        )

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Registered entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"
