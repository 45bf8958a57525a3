"""``voxelflow list [KIND] [--options [NAME]]``: the registered components and their options.

Kinds: networks, losses, optimizers, schedulers, samplers, transforms, metrics, readers,
writers, applications, hooks, or all (default). Networks also show their parameter count at default
settings for a 3D network with 1 input and 2 output channels. Registries are imported only when
listed; a kind whose module is not part of this installation is skipped with a note.

``--options NAME`` prints every option of component NAME with its type, default and meaning
(the text of the reference pages in ``docs/reference/``); ``--options`` alone, of every
component of KIND.

Example:
    $ voxelflow list networks --options unet
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from voxelflow.errors import RegistryError
from voxelflow.registry import suggest

if TYPE_CHECKING:  # torch loads only when networks are counted
    from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrySource:
    """Where a registry lives: ``module.attribute``, shown under ``title``."""

    title: str
    module: str
    attribute: str


#: kind → registries listed for it, in order
KINDS: dict[str, tuple[RegistrySource, ...]] = {
    "networks": (RegistrySource("networks", "voxelflow.networks", "NETWORKS"),),
    "losses": (RegistrySource("losses", "voxelflow.losses", "LOSSES"),),
    "optimizers": (RegistrySource("optimizers", "voxelflow.optim", "OPTIMIZERS"),),
    "schedulers": (RegistrySource("schedulers", "voxelflow.optim", "SCHEDULERS"),),
    "samplers": (RegistrySource("samplers", "voxelflow.sampling", "SAMPLERS"),),
    "transforms": (
        RegistrySource("augmentations", "voxelflow.transforms.compose", "AUGMENTATIONS"),
        RegistrySource("normalizers", "voxelflow.transforms.normalize", "NORMALIZERS"),
    ),
    "metrics": (RegistrySource("metrics", "voxelflow.metrics", "METRICS"),),
    "readers": (RegistrySource("readers", "voxelflow.io.readers", "READERS"),),
    "writers": (RegistrySource("writers", "voxelflow.io.writers", "WRITERS"),),
    "applications": (RegistrySource("applications", "voxelflow.applications", "APPLICATIONS"),),
    "hooks": (RegistrySource("hooks", "voxelflow.engine.hooks", "HOOKS"),),
}

#: settings at which ``list networks`` counts parameters
NETWORK_PROBE = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``list`` sub-command."""
    parser = subparsers.add_parser(
        "list",
        help="list networks, losses, optimizers, ... with descriptions",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "kind",
        nargs="?",
        default="all",
        choices=[*KINDS, "all"],
        help="what to list (default: all)",
    )
    parser.add_argument(
        "--no-params", action="store_true", help="do not build networks to count their parameters"
    )
    parser.add_argument(
        "--options",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="print each option of component NAME (type, default, meaning); without NAME, "
        "of every component of KIND",
    )
    parser.set_defaults(func=run)


def load_registry(source: RegistrySource) -> tuple[Any | None, str]:
    """Import ``source``'s registry; ``(None, reason)`` when its module or attribute is absent.

    Errors other than the module itself being absent propagate (a broken module is a bug).
    """
    try:
        module = importlib.import_module(source.module)
    except ModuleNotFoundError as exc:
        if exc.name and source.module.startswith(exc.name):
            return None, f"module {source.module} is not available"
        raise
    registry = getattr(module, source.attribute, None)
    if registry is None:
        return None, f"{source.module} defines no {source.attribute} registry yet"
    return registry, ""


def network_parameter_counts(names: Sequence[str]) -> dict[str, str]:
    """Formatted parameter counts of each network at :data:`NETWORK_PROBE` settings."""
    networks = importlib.import_module("voxelflow.networks")
    build = getattr(networks, "build_network", None)
    count = getattr(networks, "count_parameters", None)
    if build is None or count is None:
        return {}
    counts = {}
    for name in names:
        try:
            counts[name] = f"{count(_build_without_memory(build, name)):,} params"
        except Exception as exc:  # one network failing to build must not hide the others
            logger.debug("cannot build network %r at %s: %s", name, NETWORK_PROBE, exc)
            counts[name] = "n/a (not 3D at defaults)"
    return counts


def _build_without_memory(build: Callable[..., nn.Module], name: str) -> nn.Module:
    """Build a network on the ``meta`` device (shapes only, no memory); plain build as fallback."""
    import torch

    try:
        with torch.device("meta"):
            return build(name, **NETWORK_PROBE)
    except Exception:  # some layers may refuse meta tensors: build for real
        return build(name, **NETWORK_PROBE)


def format_entries(entries: Sequence[Any], extras: dict[str, str]) -> list[str]:
    """One aligned line per registry entry: name, optional extra column, description."""
    name_width = max((len(entry.name) for entry in entries), default=0)
    extra_width = max((len(value) for value in extras.values()), default=0)
    lines = []
    for entry in entries:
        extra = f"{extras.get(entry.name, ''):>{extra_width}}  " if extras else ""
        lines.append(f"  {entry.name:<{name_width}}  {extra}{entry.description}".rstrip())
    return lines


def list_kind(kind: str, *, count_params: bool, out: TextIO) -> None:
    """Write the entries of every registry of ``kind`` to ``out``."""
    for source in KINDS[kind]:
        registry, reason = load_registry(source)
        if registry is None:
            out.write(f"{source.title}: skipped ({reason})\n")
            continue
        entries = registry.entries()
        extras = {}
        if kind == "networks" and count_params:
            extras = network_parameter_counts([entry.name for entry in entries])
        out.write(f"{source.title} ({len(entries)}):\n")
        out.writelines(line + "\n" for line in format_entries(entries, extras))


def list_options(kinds: Sequence[str], name: str, *, out: TextIO) -> None:
    """Write the options of component ``name`` (every component when empty) of ``kinds``.

    Raises:
        RegistryError: no registry of ``kinds`` has a component ``name`` (with suggestions).
    """
    from voxelflow.config.options import options_text

    blocks, known, what = [], [], set()
    for kind in kinds:
        for source in KINDS[kind]:
            registry, _ = load_registry(source)
            if registry is None:
                continue
            known += registry.names()
            what.add(registry.kind)
            names = registry.names() if not name else [name] if name in registry else []
            blocks += [options_text(source.title, n) for n in names]
    if not blocks:
        noun = what.pop() if len(what) == 1 else "component"
        raise RegistryError(
            f"--options: unknown {noun} {name!r}.{suggest(name, known)} "
            f"Known: {', '.join(sorted(set(known)))}"
        )
    out.write("\n".join(blocks))


def run(args: argparse.Namespace) -> int:
    """List the requested kind (or all kinds) on standard output; returns 0."""
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    if args.options is not None:
        list_options(kinds, args.options, out=sys.stdout)
        return 0
    for index, kind in enumerate(kinds):
        if index:
            sys.stdout.write("\n")
        list_kind(kind, count_params=not args.no_params, out=sys.stdout)
    return 0
