"""What every registered component accepts: each option's type, default and meaning.

One source for ``voxelflow list KIND --options NAME``, ``voxelflow config show --defaults`` and
the generated reference pages of the docs (``docs/reference/``), so the three never disagree.

* the **type** is the constructor's annotation, as written in the code;
* the **default** is the constructor's default, as YAML (``required`` when there is none);
* the **meaning** is the option's line in the ``Args:`` section of the component's docstring
  (the class, its ``__init__`` or its bases), or of the shared :data:`COMMON_MEANINGS`.

Options the builder sets itself (a network's ``in_channels``, an optimiser's ``params``) are
not settable from a config and are listed apart, as ``fixed``.

Example:
    >>> [option.name for option in component_options("networks", "unet")][:2]
    ['channels', 'strides']
    >>> next(o for o in component_options("optimizers", "sgd") if o.name == "lr").default
    '0.01'
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxelflow.errors import RegistryError
from voxelflow.registry import Registry, suggest

if TYPE_CHECKING:
    from voxelflow.config.schema import Component, ExperimentConfig


@dataclass(frozen=True)
class RegistryKind:
    """Where a registry lives and which constructor arguments voxelflow supplies itself."""

    module: str
    attribute: str
    fixed: frozenset[str] = frozenset()


#: registry kind → its location; the kinds of ``voxelflow list`` and of the reference pages
REGISTRY_KINDS: dict[str, RegistryKind] = {
    "networks": RegistryKind(
        "voxelflow.networks", "NETWORKS", frozenset({"spatial_dims", "in_channels", "out_channels"})
    ),
    "losses": RegistryKind("voxelflow.losses", "LOSSES"),
    "optimizers": RegistryKind("voxelflow.optim", "OPTIMIZERS", frozenset({"params"})),
    "schedulers": RegistryKind(
        "voxelflow.optim", "SCHEDULERS", frozenset({"max_iterations"})
    ),
    "samplers": RegistryKind(
        "voxelflow.sampling",
        "SAMPLERS",
        frozenset({"window", "windows_per_subject", "label_window", "pad_value"}),
    ),
    "augmentations": RegistryKind("voxelflow.transforms.compose", "AUGMENTATIONS"),
    "normalizers": RegistryKind("voxelflow.transforms.normalize", "NORMALIZERS"),
    "metrics": RegistryKind(
        "voxelflow.metrics", "METRICS", frozenset({"pred", "ref", "spacing", "tolerance"})
    ),
    "readers": RegistryKind("voxelflow.io.readers", "READERS", frozenset({"path", "series_uid"})),
    "writers": RegistryKind(
        "voxelflow.io.writers", "WRITERS", frozenset({"array", "affine", "meta", "path"})
    ),
    "applications": RegistryKind("voxelflow.applications", "APPLICATIONS"),
}

#: the config key each kind's components are chosen under (for messages and pages)
CONFIG_KEYS: dict[str, str] = {
    "networks": "network",
    "losses": "loss",
    "optimizers": "optimizer",
    "schedulers": "scheduler",
    "samplers": "sampling.sampler",
    "augmentations": "augmentation (a list)",
    "normalizers": "preprocessing.normalization (a list)",
    "metrics": "evaluation.metrics (names only)",
    "readers": "chosen by file suffix (voxelflow info --reader)",
    "writers": "chosen by output suffix",
    "applications": "application (its options under task)",
}

#: meanings of the optimiser options every torch optimiser shares, where a docstring says nothing
COMMON_MEANINGS: dict[str, str] = {
    "lr": "learning rate",
    "weight_decay": "weight decay (L2 penalty; decoupled from the gradient for adamw)",
    "momentum": "momentum factor",
    "nesterov": "use Nesterov momentum",
    "betas": "coefficients of the running averages of the gradient and its square",
    "eps": "term added to the denominator for numerical stability",
}

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Options|Attributes):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?:\s*(.*)$")


@dataclass(frozen=True)
class Option:
    """One option of a component: ``name: type = default`` and what it means."""

    name: str
    type: str
    default: str
    meaning: str

    @property
    def required(self) -> bool:
        """Whether the config must give it."""
        return self.default == "required"


def load_registry(kind: str) -> Registry[Any]:
    """The registry of ``kind``.

    Raises:
        RegistryError: unknown kind (with suggestions).
    """
    if kind not in REGISTRY_KINDS:
        known = sorted(REGISTRY_KINDS)
        raise RegistryError(
            f"unknown component kind {kind!r}.{suggest(kind, known)} Known kinds: {', '.join(known)}"
        )
    source = REGISTRY_KINDS[kind]
    registry: Registry[Any] = getattr(importlib.import_module(source.module), source.attribute)
    return registry


def docstring_arguments(obj: object) -> dict[str, str]:
    """``name → text`` of the ``Args:`` sections of ``obj``'s docstrings (Google style).

    Looks at the object, its ``__init__`` and, for classes, every base in method resolution
    order; the first mention of a name wins. Continuation lines are joined with spaces.
    """
    found: dict[str, str] = {}
    for doc in _docstrings(obj):
        for name, text in _parse_args_section(doc).items():
            found.setdefault(name.lstrip("*"), text)
    return found


def _docstrings(obj: object) -> Iterator[str]:
    owners = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
    for owner in owners:
        if owner is object:
            continue
        yield inspect.getdoc(owner) or ""
        init = owner.__dict__.get("__init__") if inspect.isclass(owner) else None
        if init is not None:
            yield inspect.getdoc(init) or ""


def _parse_args_section(doc: str) -> dict[str, str]:
    arguments: dict[str, str] = {}
    lines = doc.splitlines()
    index = 0
    while index < len(lines):
        if not _ARGS_HEADER.match(lines[index].strip()):
            index += 1
            continue
        index += 1
        base_indent: int | None = None
        current: str | None = None
        while index < len(lines):
            line = lines[index]
            if not line.strip():  # a blank line inside the section: keep reading
                index += 1
                continue
            indent = len(line) - len(line.lstrip())
            if base_indent is None:
                base_indent = indent
            if indent < base_indent or (indent == 0 and base_indent == 0):
                break
            match = _ARG_LINE.match(line.strip())
            if indent == base_indent and match:
                current = match.group(1)
                arguments[current] = match.group(2).strip()
            elif indent > base_indent and current is not None:
                arguments[current] = f"{arguments[current]} {line.strip()}".strip()
            else:
                break
            index += 1
    return arguments


def yaml_value(value: object) -> str:
    """A default as one line of YAML: tuples as lists, ``None`` as ``null``."""
    import yaml

    def plain(item: Any) -> Any:
        if isinstance(item, (tuple, list)):
            return [plain(v) for v in item]
        if isinstance(item, dict):
            return {k: plain(v) for k, v in item.items()}
        return item

    try:
        text: str = yaml.safe_dump(  # no stream: the YAML text (yaml has no type information)
            plain(value), default_flow_style=True, allow_unicode=True, sort_keys=False, width=10_000
        )
    except yaml.YAMLError:  # an object with no YAML form (a callable): its repr is still honest
        return repr(value)
    return text.strip().removesuffix("...").strip()


def _annotation_text(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def accepted_parameters(obj: Callable[..., Any]) -> list[inspect.Parameter]:
    """The named parameters ``obj`` accepts, in declaration order.

    A class whose ``__init__`` passes ``**kwargs`` on to its base (every augmentation passes
    ``p`` and ``include`` to :class:`~voxelflow.transforms.base.Transform`) also accepts the
    base's parameters: they are followed up the method resolution order.
    """
    if not inspect.isclass(obj):
        try:
            return [p for p in inspect.signature(obj).parameters.values() if _is_named(p)]
        except (TypeError, ValueError):  # builtins or plugins without an inspectable signature
            return []
    found: dict[str, inspect.Parameter] = {}
    for owner in inspect.getmro(obj):
        init = owner.__dict__.get("__init__")
        if init is None or owner is object:
            continue
        try:
            parameters = list(inspect.signature(init).parameters.values())[1:]  # drop self
        except (TypeError, ValueError):
            break
        for parameter in parameters:
            if _is_named(parameter):
                found.setdefault(parameter.name, parameter)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    else:
        if not found:  # a dataclass or a class with no __init__ of its own
            try:
                return [p for p in inspect.signature(obj).parameters.values() if _is_named(p)]
            except (TypeError, ValueError):
                return []
    return list(found.values())


def _is_named(parameter: inspect.Parameter) -> bool:
    return parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


def signature_options(obj: Callable[..., Any], skip: frozenset[str]) -> list[Option]:
    """The keyword options of ``obj``'s constructor, in declaration order, minus ``skip``."""
    meanings = docstring_arguments(obj)
    options = []
    for parameter in accepted_parameters(obj):
        if parameter.name in skip or parameter.name == "self":
            continue
        default = (
            "required" if parameter.default is parameter.empty else yaml_value(parameter.default)
        )
        meaning = meanings.get(parameter.name) or COMMON_MEANINGS.get(parameter.name, "")
        options.append(
            Option(parameter.name, _annotation_text(parameter.annotation), default, meaning)
        )
    return options


def component_options(kind: str, name: str) -> list[Option]:
    """The options a config may set for component ``name`` of ``kind``.

    For an application these are its ``task:`` options (the constructor's arguments are built
    by voxelflow); an application without a task model (segmentation, a plugin) has none.

    Raises:
        RegistryError: unknown kind or name (with suggestions).
    """
    registry = load_registry(kind)
    factory = registry.get(name)
    if kind == "applications":
        return task_options(name)
    return signature_options(factory, REGISTRY_KINDS[kind].fixed)


def task_model(application: str) -> Any | None:
    """The pydantic model of an application's ``task:`` section (its ``task_model``), or
    ``None``: an application without task options, or a name that is no application (built-in
    names, and plugins by their ``package.module:Name`` path, resolved by the registry)."""
    try:
        application_class = load_registry("applications").get(application)
    except RegistryError:
        return None
    return getattr(application_class, "task_model", None)


def task_options(application: str) -> list[Option]:
    """The ``task:`` options of an application: type, default and meaning of each field."""
    model = task_model(application)
    if model is None:
        return []
    meanings = docstring_arguments(model)
    options = []
    for name, field in model.model_fields.items():
        default = (
            "required"
            if field.is_required()
            else yaml_value(_plain_model(field.get_default(call_default_factory=True)))
        )
        meaning = meanings.get(name) or field.description or ""
        options.append(Option(name, _annotation_text(field.annotation), default, meaning))
    return options


def _plain_model(value: Any) -> Any:
    from pydantic import BaseModel

    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def task_defaults(application: str) -> dict[str, Any]:
    """``option → default`` of an application's ``task:`` section (required ones left out)."""
    model = task_model(application)
    if model is None:
        return {}
    return {
        name: _plain(_plain_model(field.get_default(call_default_factory=True)))
        for name, field in model.model_fields.items()
        if not field.is_required()
    }


def component_defaults(kind: str, name: str) -> dict[str, Any]:
    """``option → default`` of component ``name`` (required options left out).

    Raises:
        RegistryError: unknown kind or name.
    """
    if kind == "applications":
        load_registry(kind).get(name)  # unknown names still raise
        return task_defaults(name)
    registry = load_registry(kind)
    skip = REGISTRY_KINDS[kind].fixed
    return {
        p.name: _plain(p.default)
        for p in accepted_parameters(registry.get(name))
        if p.name not in skip and p.name != "self" and p.default is not p.empty
    }


def _plain(value: Any) -> Any:
    """A default as a YAML-safe value (tuples as lists; other objects as their repr)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fixed_arguments(kind: str, name: str) -> list[str]:
    """The arguments of component ``name`` that voxelflow supplies (not settable)."""
    registry = load_registry(kind)
    if kind == "applications":
        return []
    parameters = accepted_parameters(registry.get(name))
    return [p.name for p in parameters if p.name in REGISTRY_KINDS[kind].fixed]


def options_text(kind: str, name: str, *, width: int = 100) -> str:
    """The terminal form of a component's options (``voxelflow list KIND --options NAME``).

    One ``name: type = default`` line per option, its meaning indented below it.
    """
    registry = load_registry(kind)
    entry = next((e for e in registry.entries() if e.name == name), None)
    options = component_options(kind, name)  # raises for an unknown name
    description = entry.description if entry is not None else ""
    lines = [f"{registry.kind} {name!r}: {description}".rstrip()]
    lines.append(f"  set under: {CONFIG_KEYS.get(kind, kind)}")
    fixed = fixed_arguments(kind, name)
    if fixed:
        lines.append(f"  set by voxelflow: {', '.join(fixed)}")
    if not options:
        lines.append("  options: none")
    for option in options:
        head = f"  {option.name}"
        if option.type:
            head += f": {option.type}"
        head += " (required)" if option.required else f" = {option.default}"
        lines.append(head)
        if option.meaning:
            lines += textwrap.wrap(
                option.meaning, width=width, initial_indent="      ", subsequent_indent="      "
            )
    return "\n".join(lines) + "\n"


_CODE_SPAN = re.compile(r"``\s?(.+?)\s?``|`([^`]+)`")


def _cell(text: str, *, code: bool = False) -> str:
    """A Markdown table cell that renders the same on GitHub and in the MkDocs site.

    Pipes are written as ``&#124;`` (GitHub splits cells at a pipe even inside backticks) and
    code spans as ``<code>`` (a backslash escape would show inside backticks on the site).
    """
    import html

    def plain(part: str) -> str:
        return html.escape(part, quote=False).replace("|", "&#124;")

    if code:
        return f"<code>{plain(text)}</code>" if text else ""
    parts, position = [], 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(plain(text[position : match.start()]))
        parts.append(f"<code>{plain(match.group(1) or match.group(2))}</code>")
        position = match.end()
    parts.append(plain(text[position:]))
    return "".join(parts)


def github_table_cells(markdown: str) -> str:
    """Table rows of ``markdown`` with backtick cells as ``<code>`` (pipes inside kept).

    For pages read on GitHub as well as on the site; text outside tables is unchanged.
    """
    out = []
    for line in markdown.splitlines():
        if line.startswith("| ") and line.rstrip().endswith("|"):
            cells = re.split(r"(?<!\\)\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line)[1:-1]
            line = "| " + " | ".join(_code_cell(c.strip()) for c in cells) + " |"
        out.append(line)
    return "\n".join(out) + ("\n" if markdown.endswith("\n") else "")


def _code_cell(cell: str) -> str:
    match = _CODE_SPAN.fullmatch(cell)
    if match is None:
        return cell
    return _cell(match.group(1) or match.group(2), code=True)


def reference_markdown(kind: str) -> str:
    """The reference page of one registry: every component with its options table."""
    registry = load_registry(kind)
    lines = [
        f"# {kind.capitalize()}",
        "",
        "<!-- Generated by `python docs/hooks/config_reference.py --write-reference`; do not edit. -->",
        "",
        f"Chosen under `{CONFIG_KEYS.get(kind, kind)}`. The same text is printed by "
        f"`voxelflow list {kind} --options NAME`.",
        "",
    ]
    for entry in registry.entries():
        lines += [f"## `{entry.name}`", "", entry.description or "(no description)", ""]
        fixed = fixed_arguments(kind, entry.name)
        if fixed:
            lines += [f"Set by voxelflow: {', '.join(f'`{f}`' for f in fixed)}.", ""]
        options = component_options(kind, entry.name)
        if not options:
            lines += ["No options.", ""]
            continue
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(o.name, code=True)} | {_cell(o.type, code=True)} "
            f"| {_cell(o.default, code=True)} "
            f"| {_cell(o.meaning)} |"
            for o in options
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


#: last key segment of a component in the config → its registry kind
_COMPONENT_KEYS: dict[str, str] = {
    "network": "networks",
    "discriminator": "networks",
    "loss": "losses",
    "optimizer": "optimizers",
    "scheduler": "schedulers",
    "sampler": "samplers",
    "augmentation": "augmentations",
    "normalization": "normalizers",
}


def component_kind(key: str) -> str | None:
    """The registry kind of the component at config key ``key`` (``None`` when unknown).

    ``network`` → networks, ``augmentation.2`` → augmentations,
    ``task.discriminator_optimizer`` → optimizers.
    """
    parts = [part for part in key.split(".") if not part.isdigit()]
    if not parts:
        return None
    last = parts[-1]
    for suffix, kind in _COMPONENT_KEYS.items():
        if last == suffix or last.endswith(f"_{suffix}"):
            return kind
    return None


def iter_components(model: object, prefix: str = "") -> Iterator[tuple[str, Component]]:
    """``(key, Component)`` of every component inside a config model, depth first."""
    from pydantic import BaseModel

    from voxelflow.config.schema import Component

    if isinstance(model, Component):
        yield prefix, model
        return
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from iter_components(getattr(model, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            yield from iter_components(item, f"{prefix}.{index}")
    elif isinstance(model, dict):
        for name, item in model.items():
            yield from iter_components(item, f"{prefix}.{name}")


def with_component_defaults(experiment: ExperimentConfig) -> dict[str, Any]:
    """The resolved experiment as a plain dict, every component's defaults filled in.

    What the config gave wins over the default; required options stay absent (validation names
    them). A component whose name does not resolve is left as written.
    """
    data = experiment.model_dump(mode="json")
    for key, component in iter_components(experiment):
        kind = component_kind(key)
        if kind is None:
            continue
        try:
            defaults = component_defaults(kind, component.name)
        except RegistryError:
            continue
        _set_key(data, key, {"name": component.name, **defaults, **component.kwargs})
    if isinstance(experiment.application, str) and task_model(experiment.application) is not None:
        data["task"] = {**task_defaults(experiment.application), **data.get("task", {})}
    return data


def _set_key(data: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value
