"""Load, override, validate, dump and compare experiment configurations.

A configuration is a YAML file (or a NiftyNet ``.ini``, converted on the fly) validated into a
frozen :class:`~voxelflow.config.schema.ExperimentConfig`. ``--set a.b.c=value`` overrides are parsed
with YAML scalar semantics, so ``--set network.channels=[8,16]`` gives a list of ints and
``--set preprocessing.spacing=null`` gives None. Every problem is reported at once, as one
:class:`~voxelflow.errors.ConfigError` that names the file and each key path.

Example:
    >>> exp = load_experiment({"training": {"max_iterations": 5}}, ["training.batch_size=4"])
    >>> exp.training.batch_size
    4
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, cast

import yaml
from pydantic import BaseModel, ValidationError

from voxelflow.config.schema import Component, ExperimentConfig
from voxelflow.errors import ConfigError, MissingFileError
from voxelflow.registry import suggest

logger = logging.getLogger(__name__)


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans: only true/false, so ``amp: off`` stays a string
    (pydantic still reads yes/no/on/off as booleans where a field is boolean)."""


_SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 (and JSON) read ``1e-3`` as a number; PyYAML's 1.1 rules need a dot (``1.0e-3``) and
# would hand ``lr: 1e-3`` to the optimiser as a string.
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(
    loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False
) -> Any:
    """A later duplicate key would silently replace the first one: refuse it, naming both lines."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                key_node.start_mark,
            )  # fmt: skip
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SafeLoader.construct_mapping = _mapping_without_duplicates


def safe_load(text: str) -> Any:
    """Parse YAML safely (no object construction) with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_SafeLoader)


__all__ = [
    "apply_overrides",
    "dump_experiment",
    "experiment_diff",
    "flatten",
    "load_experiment",
    "parse_override",
    "read_yaml",
    "validate_experiment",
]


def load_experiment(
    source: str | os.PathLike[str] | Mapping[str, Any] | ExperimentConfig,
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """Load and validate an experiment, applying ``key.path=value`` overrides.

    Args:
        source: a YAML path, a NiftyNet ``.ini`` path, a plain mapping or an ExperimentConfig.
        overrides: ``"a.b.c=value"`` strings, applied in order (values parsed as YAML scalars).

    Returns:
        The validated, frozen ExperimentConfig.

    Raises:
        ConfigError: bad YAML (file and line), unknown keys (with suggestions), wrong types
            (``key.path: expected X, got Y``) or a bad override path.
        MissingFileError: the file does not exist.

    Example:
        >>> experiment = load_experiment({"network": {"name": "unet"}}, ["training.max_iterations=50"])
        >>> experiment.network.name, experiment.training.max_iterations
        ('unet', 50)
    """
    origin = "<dict>"
    if isinstance(source, ExperimentConfig):
        data: dict[str, Any] = source.model_dump(mode="json")
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        origin = str(path)
        suffix = path.suffix.lower()
        data = read_yaml(path) if suffix in YAML_SUFFIXES else config_reader(path)(path)
    data = apply_overrides(data, overrides)
    return validate_experiment(data, origin=origin)


#: suffixes read as YAML (JSON is YAML); any other file goes to a reader of CONFIG_READERS
YAML_SUFFIXES = (".yaml", ".yml", ".json", "")
#: entry-point group of config-file readers by suffix without its dot (``ini``: NiftyNet's, in
#: voxelflow.niftynet); a reader takes the path and returns config data (a mapping)
CONFIG_READERS = "voxelflow.config_readers"


def config_reader(path: Path) -> Callable[[Path], dict[str, Any]]:
    """The reader of ``path``'s format: the entry point of :data:`CONFIG_READERS` named by its
    suffix (found only for a suffix that is not YAML, so YAML loading stays cheap), else
    ``read_yaml`` (a config named ``.cfg`` or ``.txt`` is YAML as before).

    Raises:
        ConfigError: the entry point exists but cannot be loaded (names it and the error).
    """
    from importlib.metadata import entry_points

    name = path.suffix.lower().lstrip(".")
    for point in entry_points(group=CONFIG_READERS):
        if point.name == name:
            try:
                return cast(Callable[[Path], dict[str, Any]], point.load())
            except ImportError as error:
                raise ConfigError(
                    f"{path}: the reader of {path.suffix!r} files ({point.value}) cannot be "
                    f"imported: {error}"
                ) from error
    if name == "ini":  # voxelflow's own reader: only missing when the package is not installed
        raise ConfigError(
            f"{path}: NiftyNet .ini files are read through the {CONFIG_READERS!r} entry point, "
            "which an installed voxelflow provides (pip install -e .); from a source tree, "
            "convert it first: voxelflow.niftynet.conversion.read_niftynet_ini"
        )
    return read_yaml


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: bad syntax (with file, line and column) or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"config file not found: expected an existing file, got {str(path)!r}"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    return data


def validate_experiment(data: Mapping[str, Any], *, origin: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping into an ExperimentConfig; every problem listed in one ConfigError.

    Args:
        data: the raw configuration.
        origin: file name (or ``<dict>``) named in the error.

    Raises:
        ConfigError: one line per problem, ``key.path: expected X, got Y``.
    """
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = describe_validation_errors(exc, ExperimentConfig)
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"invalid configuration {origin} ({len(problems)} problem(s)):\n{listing}"
        ) from None


# --------------------------------------------------------------------------- error messages
_TYPE_TAG_PREFIXES = (
    "function-",
    "list[",
    "dict[",
    "literal[",
    "union[",
    "tagged-union[",
    "nullable[",
)
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "is-instance[Path]", "lax-or-strict"}


def describe_validation_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Turn a pydantic ValidationError into ``key.path: expected X, got Y`` lines (deduplicated)."""
    by_key: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_type_tag(part)]
        key = ".".join(str(p) for p in loc) or "<top level>"
        if error["type"] == "extra_forbidden":
            parent_fields = _field_names_at(model, loc[:-1])
            name = str(loc[-1])
            by_key.setdefault(key, []).append(
                f"unknown key {name!r}{_did_you_mean(name, parent_fields)}"
            )
            got[key] = ""
            continue
        if error["type"] == "missing":
            by_key.setdefault(key, []).append("required key is missing")
            got[key] = ""
            continue
        expected = error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
        by_key.setdefault(key, []).append(expected)
        got[key] = f", got {_short_repr(error.get('input'))}"
    lines = []
    for key, expectations in by_key.items():
        unique = list(dict.fromkeys(expectations))
        if unique[0].startswith(("unknown key", "required key", "expected ")):
            lines.append(f"{key}: {'; '.join(unique)}")
        else:
            lines.append(f"{key}: expected {' or '.join(unique)}{got[key]}")
    return lines


def _did_you_mean(name: str, choices: list[str]) -> str:
    hint = suggest(name, choices)
    if not hint:
        return f" (known keys: {', '.join(choices)})" if choices else ""
    first = hint.removeprefix(" Did you mean: ").split(",")[0].rstrip("?")
    return f"; did you mean {first}?"


def _is_type_tag(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or part.startswith(_TYPE_TAG_PREFIXES))


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _field_names_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the model found by walking ``loc`` (empty when not a model)."""
    current: Any = model
    for part in loc:
        current = _child_type(current, part)
        if current is None:
            return []
    models = [t for t in _union_members(current) if _is_section(t)]
    return sorted(models[0].model_fields) if models else []


# --------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], parsed value)``.

    The value is parsed as YAML (``10`` → int, ``[8,16]`` → list, ``null`` → None, ``abc`` → str;
    only ``true``/``false`` are booleans, so ``off`` stays a string).

    Raises:
        ConfigError: no ``=``, an empty key or a value that is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"--set {text!r}: expected KEY.PATH=VALUE, e.g. training.max_iterations=10"
        )
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {exc}") from None
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override applied.

    Paths are checked against the ExperimentConfig schema (component options and dict-valued fields
    accept any key); list items are addressed by index (``augmentation.0.p=0.5``).

    Raises:
        ConfigError: a malformed override or an unknown key path (with suggestions).
    """
    result: dict[str, Any] = _plain_copy(data)  # a Mapping copies to a dict
    for text in overrides:
        parts, value = parse_override(text)
        _check_override_path(parts, text)
        _set_path(result, parts, value, text)
    return result


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


def _check_override_path(parts: list[str], text: str) -> None:
    current: Any = ExperimentConfig
    for depth, part in enumerate(parts):
        members = _union_members(current)
        if any(t is Component or t is Any for t in members):
            return  # component options: checked against the callable's signature by build
        sections = [t for t in members if _is_section(t)]
        if sections and part not in sections[0].model_fields:
            prefix = ".".join(parts[:depth])
            where = f" in {prefix!r}" if prefix else ""
            choices = sorted(sections[0].model_fields)
            raise ConfigError(
                f"--set {text!r}: unknown key {part!r}{where}{_did_you_mean(part, choices)}"
            )
        child = _child_type(current, part)
        if child is None:
            raise ConfigError(f"--set {text!r}: {'.'.join(parts[:depth])!r} has no key {part!r}")
        current = child


def _set_path(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node: Any = data
    default: Any = ExperimentConfig().model_dump(mode="json")
    for part in parts[:-1]:
        if isinstance(node, list):
            index = _list_index(node, part, text)
            node, default = node[index], None
            continue
        default = default.get(part) if isinstance(default, dict) else None
        if node.get(part) is None:  # absent section: start from its default (component name ...)
            node[part] = _plain_copy(default) if isinstance(default, dict | list) else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, text)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(
            f"--set {text!r}: {'.'.join(parts[:-1])!r} is a {type(node).__name__}, not a section"
        )


def _list_index(node: list[Any], part: str, text: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(
            f"--set {text!r}: expected an index of the existing list ({len(node)} item(s)), "
            f"got {part!r}; set the whole list instead, e.g. key=[...]"
        )
    return int(part)


# --------------------------------------------------------------------------- schema walking
def _is_section(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel) and tp is not Component


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, UnionType):
        return [m for arg in typing.get_args(tp) for m in _union_members(arg)]
    return [tp]


def _child_type(tp: Any, part: Any) -> Any:
    """Type of ``tp[part]``: a model field, a dict value or a list item; None when impossible."""
    for member in _union_members(tp):
        if member is Component or member is Any:
            return Any
        if _is_section(member):
            field = member.model_fields.get(str(part))
            if field is not None:
                return field.annotation
            continue
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin is dict:
            return args[1] if len(args) == 2 else Any
        if origin is list and str(part).lstrip("-").isdigit():
            return args[0] if args else Any
    return None


# --------------------------------------------------------------------------- dump and diff
def dump_experiment(experiment: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write the fully resolved experiment (defaults included) as YAML, atomically.

    Args:
        experiment: the validated experiment.
        path: destination ``.yaml``; parent folders are created.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     experiment = load_experiment({"training": {"max_iterations": 5}})
        ...     path = dump_experiment(experiment, Path(folder, "config.yaml"))
        ...     print(path.name, load_experiment(path).training.max_iterations)
        config.yaml 5
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = experiment_to_yaml(experiment)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def experiment_to_yaml(experiment: ExperimentConfig) -> str:
    """The resolved experiment as YAML text (section order kept)."""
    text: str = yaml.safe_dump(  # no stream: the YAML text (yaml has no type information)
        experiment.model_dump(mode="json"), sort_keys=False, allow_unicode=True
    )
    return text


def flatten(data: object, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b.c": value}`` (lists are kept as leaf values)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if not isinstance(data, Mapping) or (prefix and not data):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def experiment_diff(
    a: ExperimentConfig | Mapping[str, Any], b: ExperimentConfig | Mapping[str, Any]
) -> list[str]:
    """Dotted keys whose values differ between two experiments (sorted).

    Keys present in only one of them count as differing. Used on resume to report what changed.
    """
    flat_a, flat_b = flatten(a), flatten(b)
    missing = object()
    return sorted(
        key
        for key in set(flat_a) | set(flat_b)
        if flat_a.get(key, missing) != flat_b.get(key, missing)
    )
