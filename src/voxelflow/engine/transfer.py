"""Transfer learning: load pretrained tensors with renaming and filtering, and freeze parameters.

Example:
    >>> report = load_pretrained(net, "runs/brain", mapping={"encoder.": "backbone."},
    ...                          exclude=["head.*"])  # doctest: +SKIP
    >>> frozen = freeze(net, ["backbone.*"])  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from voxelflow.errors import CheckpointError, ConfigError
from voxelflow.registry import suggest
from voxelflow.types import PathLike

if TYPE_CHECKING:
    from voxelflow.config.schema import TransferConfig

logger = logging.getLogger(__name__)

REGEX_PREFIX = "re:"


@dataclass
class TransferReport:
    """What :func:`load_pretrained` did, tensor by tensor (target names).

    Attributes:
        loaded: target tensors copied from the source.
        skipped_shape: ``(name, target shape, source shape)`` of tensors left new on a shape mismatch.
        missing_in_source: target tensors the source does not have (left new).
        unused_in_source: source tensors (after renaming) that no target tensor took.
        excluded: target tensors left new by ``include``/``exclude``.
    """

    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing_in_source: list[str] = field(default_factory=list)
    unused_in_source: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts, plus the mismatched shapes."""
        text = (
            f"loaded {len(self.loaded)}, skipped (shape) {len(self.skipped_shape)}, "
            f"new (missing in source) {len(self.missing_in_source)}, excluded "
            f"{len(self.excluded)}, unused in source {len(self.unused_in_source)}"
        )
        shapes = "; ".join(f"{n}: {t} vs source {s}" for n, t, s in self.skipped_shape[:10])
        return f"{text}{' [' + shapes + ']' if shapes else ''}"


def rename_keys(state: Mapping[str, Any], mapping: Mapping[str, str] | None) -> dict[str, Any]:
    """Apply renames to source keys, rules in order, first matching rule wins.

    A rule ``"encoder." → "backbone."`` replaces a prefix; ``"re:^down(\\d)" → "enc\\1"``
    substitutes a regular expression.

    Raises:
        ConfigError: an invalid regex, or two source keys renamed to the same name.
    """
    rules: list[tuple[re.Pattern[str] | str, str]] = []
    for old, new in (mapping or {}).items():
        if old.startswith(REGEX_PREFIX):
            try:
                rules.append((re.compile(old[len(REGEX_PREFIX) :]), new))
            except re.error as exc:
                raise ConfigError(
                    f"transfer mapping {old!r}: expected a valid regex: {exc}"
                ) from exc
        else:
            rules.append((old, new))
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        new_key = _rename(key, rules)
        if new_key in renamed:
            raise ConfigError(
                f"transfer mapping: expected distinct names, got two source tensors renamed to the same name {new_key!r}"
            )
        renamed[new_key] = value
    return renamed


def _rename(key: str, rules: list[tuple[re.Pattern[str] | str, str]]) -> str:
    for pattern, replacement in rules:
        if isinstance(pattern, str):
            if key.startswith(pattern):
                return replacement + key[len(pattern) :]
        elif pattern.search(key):
            return pattern.sub(replacement, key)
    return key


def _selected(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    include = list(include)
    if include and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def load_pretrained(
    module: nn.Module,
    source: PathLike | Mapping[str, torch.Tensor],
    *,
    mapping: Mapping[str, str] | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    strict: bool = False,
) -> TransferReport:
    """Copy matching tensors of a pretrained state into ``module``; report what happened.

    Args:
        module: the network to initialise (its other tensors keep their initial values).
        source: a state dict, a checkpoint / weights file (``.pt`` or ``.safetensors``), a run
            folder (its best checkpoint) or an installed zoo entry name / entry folder.
        mapping: source key renames (prefix, or ``re:`` regex), see :func:`rename_keys`.
        include: glob patterns of target names to load (empty: all).
        exclude: glob patterns of target names never loaded (e.g. ``"head.*"``).
        strict: raise unless every selected target tensor is loaded.

    Returns:
        The :class:`TransferReport`.

    Raises:
        CheckpointError: unreadable source; with ``strict``, a tensor missing or mis-shaped.
        SecurityError: weights that need arbitrary unpickling.
    """
    label = "<state dict>" if isinstance(source, Mapping) else str(source)
    state = rename_keys(
        source if isinstance(source, Mapping) else read_source_state(source), mapping
    )
    report = TransferReport()
    own = module.state_dict()
    merged = dict(own)
    for name, tensor in own.items():
        if not _selected(name, include, exclude):
            report.excluded.append(name)
        elif name not in state:
            report.missing_in_source.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            report.skipped_shape.append((name, tuple(tensor.shape), tuple(state[name].shape)))
        else:
            merged[name] = state[name].to(dtype=tensor.dtype)
            report.loaded.append(name)
    report.unused_in_source = sorted(set(state) - set(own))
    if strict and (report.missing_in_source or report.skipped_shape):
        raise CheckpointError(f"{label}: strict transfer failed: {report.summary()}")
    if not report.loaded:
        logger.warning("%s: no tensor loaded (check mapping/include): %s", label, report.summary())
    module.load_state_dict(merged)
    logger.info("init_from %s: %s", label, report.summary())
    return report


def read_source_state(source: PathLike) -> dict[str, torch.Tensor]:
    """The network state dict of a checkpoint, weights file, run folder or zoo entry.

    Raises:
        CheckpointError: nothing usable at ``source``.
    """
    from voxelflow.engine.checkpoint import find_checkpoint

    path = Path(source).expanduser()
    if path.is_dir() and (path / "checkpoints").is_dir():
        return _state_from_file(find_checkpoint(path))
    if path.is_file():
        return _state_from_file(path)
    return _state_from_weight_source(str(source))


#: entry-point group of weight sources that are neither files nor run folders (``zoo``: an
#: installed entry's name or an entry folder, voxelflow.zoo.store); each takes the source and
#: returns a state dict, or raises LookupError when the source is not one of its own
WEIGHT_SOURCES = "voxelflow.weight_sources"


def _state_from_weight_source(source: str) -> dict[str, torch.Tensor]:
    from importlib.metadata import entry_points

    tried = []
    for point in entry_points(group=WEIGHT_SOURCES):
        tried.append(point.name)
        try:
            return cast(Callable[[str], dict[str, torch.Tensor]], point.load())(source)
        except LookupError:
            continue
    raise CheckpointError(
        "init_from: expected a checkpoint, run folder or zoo entry, got "
        f"{source!r} (weight sources tried: {', '.join(tried) or 'none installed'})"
    )


def _state_from_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"init_from: cannot read {str(path)!r}: {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load {str(path)!r} safely (weights_only): {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("modules"), dict):
        modules = state["modules"]
        for role in ("network", "generator", *modules):
            if role in modules:
                return dict(modules[role])
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise CheckpointError(
        f"{path}: expected a voxelflow checkpoint or a state dict of tensors, got "
        f"{type(state).__name__} with keys {list(state)[:5] if isinstance(state, dict) else []}"
    )


def freeze(module: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose names match any glob pattern.

    Args:
        module: the network.
        patterns: glob patterns of parameter names, e.g. ``["encoder.*"]``.

    Returns:
        The frozen parameter names.

    Raises:
        ConfigError: a pattern matches no parameter (with the closest names).
    """
    names = [name for name, _ in module.named_parameters()]
    frozen: list[str] = []
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ConfigError(
                f"transfer.freeze: pattern {pattern!r} matches no parameter.{suggest(pattern, names)}"
            )
        frozen += [name for name in matched if name not in frozen]
    parameters = dict(module.named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(False)
    logger.info("froze %d of %d parameter tensors", len(frozen), len(names))
    return frozen


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that still require gradients (what the optimiser should receive)."""
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def apply_transfer(
    module: nn.Module, transfer: TransferConfig
) -> tuple[TransferReport | None, list[str]]:
    """Apply a config ``transfer`` section (``init_from`` then ``freeze``) to a network.

    Args:
        module: the freshly built network.
        transfer: ``Experiment.transfer`` (``init_from: {source, mapping, include, exclude,
            strict} | None``, ``freeze: list[str]``).

    Returns:
        The transfer report (None without ``init_from``) and the frozen parameter names.
    """
    report = None
    init = transfer.init_from
    if init is not None:
        report = load_pretrained(
            module,
            init.source,
            mapping=init.mapping,
            include=init.include,
            exclude=init.exclude,
            strict=init.strict,
        )
    return report, freeze(module, transfer.freeze)
