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
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from voxelflow.errors import ConfigError, ConfigProblems, RegistryError

T = TypeVar("T", bound=Callable[..., object])  # every registry holds factories


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
            return cast(T, import_object(name))  # a plugin path names a factory of this kind
        known = sorted(self._entries)
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{suggest(name, known)} Known {self.kind}s: {', '.join(known)}"
        )

    def resolve(self, name: str, *, key: str) -> T:
        """:meth:`get`, with the config key in the error (``network.name: unknown network ...``)."""
        try:
            return self.get(name)
        except RegistryError as exc:
            raise RegistryError(f"{key}.name: {exc}") from None

    def check(
        self, name: str, options: Mapping[str, Any], *, key: str, fixed: Iterable[str] = ()
    ) -> tuple[T, dict[str, Any]]:
        """The component ``name`` and its options checked against its signature.

        Raises:
            RegistryError: unknown name (``key.name: ... Did you mean``).
            ConfigProblems: every option problem (see :func:`check_options`).
        """
        factory = self.resolve(name, key=key)
        what = f"{self.kind} {name!r}"
        return factory, check_options(factory, options, key=key, what=what, fixed=fixed)

    def build(self, name: str, options: Mapping[str, Any], *, key: str, **fixed: Any) -> Any:
        """Check (:meth:`check`), then call the component with ``fixed`` and the options.

        The one way voxelflow turns a configured name into an object: the ``build_*``
        functions of :mod:`voxelflow.config.build` and of each package come here.
        """
        factory, checked = self.check(name, options, key=key, fixed=fixed)
        return factory(**fixed, **checked)

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


# --------------------------------------------------------------------------- option checks
#: annotations whose values are checked (and numbers given as text read, with a warning)
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (float, int),
    "str": (str,),
}


def check_options(
    factory: Callable[..., object],
    options: Mapping[str, Any],
    *,
    key: str,
    what: str,
    fixed: Iterable[str] = (),
) -> dict[str, Any]:
    """``options`` checked against ``factory``'s signature; numbers given as text are read.

    Args:
        factory: the registered class or function.
        options: the options from the config.
        key: config key of the component (``"network"``, ``"augmentation[1]"``), in every error.
        what: the component in words (``"network 'unet'"``).
        fixed: argument names the caller passes itself (not settable from the config).

    Returns:
        The options to pass (a string such as ``"1e-3"`` for a ``float`` read as a number,
        with a warning naming ``key.option``).

    Raises:
        ConfigProblems: every problem at once: unknown options (with suggestions), options set
            by voxelflow, missing required options, values of the wrong simple type.
    """
    fixed = set(fixed)
    problems = [
        f"{key}.{option}: set by voxelflow itself for {what}, expected it absent from the "
        f"config, got {options[option]!r}"
        for option in sorted(fixed & set(options))
    ]
    parameters = _named_parameters(factory)
    checked = dict(options)
    if parameters is not None:
        problems += _signature_problems(parameters, checked, key=key, what=what, fixed=fixed)
    if problems:
        raise ConfigProblems(problems)
    return checked


def _named_parameters(factory: Callable[..., object]) -> dict[str, inspect.Parameter] | None:
    """Keyword-settable parameters, or None when they cannot be known: no inspectable
    signature (builtins, some plugins), or ``**kwargs`` that no base class resolves.

    A class whose ``__init__`` forwards ``**kwargs`` (an augmentation passing ``p`` to
    ``Transform``) accepts its base classes' parameters too, up to the first base without them.
    """
    bases = [c for c in getattr(factory, "__mro__", ()) if "__init__" in vars(c)]
    signatures = [factory] if not bases else [c.__init__ for c in bases if c is not object]
    collected: dict[str, inspect.Parameter] = {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for function in signatures:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return None
        for parameter in parameters[1 if bases else 0 :]:  # a class's __init__ starts with self
            if parameter.kind in named:
                collected.setdefault(parameter.name, parameter)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return collected
    return None


def _signature_problems(
    parameters: dict[str, inspect.Parameter],
    options: dict[str, Any],
    *,
    key: str,
    what: str,
    fixed: set[str],
) -> list[str]:
    """Unknown, missing and wrongly typed options; ``options`` gets the numbers read from text."""
    accepted = [name for name in parameters if name not in fixed]
    problems = []
    for option, value in options.items():
        if option in fixed:
            continue
        if option not in parameters:
            problems.append(
                f"{key}.{option}: unknown option of {what}.{suggest(option, accepted)} "
                f"Options: {', '.join(accepted) or 'none'}"
            )
            continue
        try:
            options[option] = _typed_value(parameters[option], value, key=f"{key}.{option}")
        except ConfigError as exc:
            problems.append(str(exc))
    problems += [
        f"{key}.{name}: expected a value (a required option of {what}), got none"
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in fixed | set(options)
    ]
    return problems


def _simple_types(parameter: inspect.Parameter) -> tuple[list[str], bool] | None:
    """Names of the simple types a parameter accepts and whether None is allowed, or None
    when its annotation is not made of simple types (nothing is checked then)."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        default = parameter.default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            return [type(default).__name__], False
        return None
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    parts = [part.strip() for part in text.replace("Optional[", "").rstrip("]").split("|")]
    names = [part for part in parts if part != "None"]
    if not names or not all(name in _SIMPLE_TYPES for name in names):
        return None
    return names, len(names) < len(parts) or parameter.default is None


def _typed_value(parameter: inspect.Parameter, value: object, *, key: str) -> object:
    """``value`` if it has the annotated simple type, a number read from text, else an error."""
    simple = _simple_types(parameter)
    if simple is None:
        return value
    names, optional = simple
    if value is None and optional:
        return value
    numeric = [name for name in names if name in ("int", "float")]
    if isinstance(value, str) and numeric and "str" not in names:
        return _number_from_text(value, key=key, integer=numeric == ["int"])
    allowed = tuple(t for name in names for t in _SIMPLE_TYPES[name])
    if isinstance(value, allowed) and not (isinstance(value, bool) and "bool" not in names):
        return value
    expected = " or ".join(names) + (" or null" if optional else "")
    raise ConfigError(f"{key}: expected {expected}, got {value!r} ({type(value).__name__})")


def _number_from_text(text: str, *, key: str, integer: bool) -> float | int:
    """``"1e-3"`` → ``0.001`` with a warning naming ``key``; refuse text that is not a number."""
    try:
        parsed = float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {text!r} (a string)") from None
    if integer and not parsed.is_integer():
        raise ConfigError(f"{key}: expected an integer, got {text!r}")
    number: float | int = int(parsed) if integer else parsed
    warnings.warn(
        f"{key}: read the string {text!r} as the number {number!r}; write it as a number",
        UserWarning,
        stacklevel=4,
    )
    return number
