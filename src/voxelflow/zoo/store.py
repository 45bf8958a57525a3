"""The local zoo: install, list, describe, resolve and remove entries.

The zoo home is ``$VOXELFLOW_ZOO_HOME`` (default ``~/.voxelflow/zoo``)::

    entries/<name>/     one installed, verified entry per name (model.yaml + its files)
    index.json          optional catalogue of known entries: {"entries": [{"name", "version",
                        "source", "description"}]}; ``install NAME`` installs from its source
    .incoming-*/        temporary extraction folders (renamed into entries/ once verified)

Example:
    >>> model = install("toy.zip")            # doctest: +SKIP
    >>> resolve_model("toy").weights_path     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from voxelflow.errors import DataError, RegistryError, SecurityError
from voxelflow.registry import suggest
from voxelflow.types import PathLike
from voxelflow.version import __version__
from voxelflow.zoo.archive import archive_kind, relative_files, safe_copy_tree, safe_extract
from voxelflow.zoo.entry import (
    CARD_NAME,
    InputAssumptions,
    ModelCard,
    load_card,
    sha256_of,
    version_tuple,
)

logger = logging.getLogger(__name__)

HOME_VARIABLE = "VOXELFLOW_ZOO_HOME"
INDEX_NAME = "index.json"


def zoo_home(home: PathLike | None = None) -> Path:
    """The zoo home: ``home`` if given, else ``$VOXELFLOW_ZOO_HOME``, else ``~/.voxelflow/zoo``."""
    if home is not None:
        return Path(home)
    configured = os.environ.get(HOME_VARIABLE)
    return Path(configured) if configured else Path.home() / ".voxelflow" / "zoo"


@dataclass(frozen=True)
class InstalledModel:
    """A verified entry on disk (installed in the zoo home, or a folder used in place)."""

    path: Path
    card: ModelCard
    config_path: Path
    weights_path: Path
    fitted_state_path: Path | None
    weights_paths: dict[str, Path] = field(default_factory=dict)
    plugin_paths: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The entry's name."""
        return self.card.name


def load_weights(path: PathLike, *, entry: str) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.pt`` (``weights_only=True``) or ``.safetensors``, on the CPU.

    Raises:
        SecurityError: the file needs arbitrary unpickling (code could run), naming the entry.
        DataError: unreadable file, or not a mapping of names to tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise DataError(f"zoo entry {entry!r}: cannot read {path.name}: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError / RuntimeError for unsafe content
            if "weights_only" in str(exc) or "npickl" in type(exc).__name__ + str(exc):
                reason = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
                raise SecurityError(
                    f"zoo entry {entry!r}: refused {path.name}: expected plain tensors loadable "
                    f"with weights_only=True, got content that needs arbitrary unpickling ({reason})"
                ) from exc
            raise DataError(f"zoo entry {entry!r}: cannot read {path.name}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(
            f"zoo entry {entry!r}: {path.name}: expected a state dict (name → tensor), "
            f"got {type(state).__name__}"
        )
    return state


def entry_weights(source: str) -> dict[str, torch.Tensor]:
    """The network weights of a zoo entry, by installed name or entry folder: the
    ``voxelflow.weight_sources`` entry point ``zoo`` (``transfer.init_from: NAME``).

    Raises:
        RegistryError: (a LookupError) no installed entry of that name: not a zoo source.
        SecurityError, DataError, ConfigError: the entry exists but does not verify.
    """
    entry = resolve_model(source)
    return load_weights(entry.weights_path, entry=entry.name)


def verify_entry(root: PathLike, *, label: str | None = None) -> InstalledModel:
    """Validate ``model.yaml``, the checksums, the file list and the weights of an entry folder.

    Raises:
        ConfigError: invalid card.
        SecurityError: checksum mismatch, an unlisted or unchecksummed file, unsafe weights.
        DataError: a listed file is missing.
    """
    root = Path(root)
    card = load_card(root / CARD_NAME)
    who = f"zoo entry {card.name!r}" + (f" (from {label})" if label else "")
    _check_versions(card)
    present = set(relative_files(root)) - {CARD_NAME}
    listed = set(card.listed_files())
    for name in sorted(listed):
        if not (root / name).is_file():
            raise DataError(f"{who}: expected file {name!r}, got nothing")
        if name not in card.sha256:
            raise SecurityError(f"{who}: expected a sha256 for {name!r}, got none")
    unlisted = sorted(present - listed - set(card.sha256))
    if unlisted:
        raise SecurityError(
            f"{who}: expected only the files named in {CARD_NAME}, got extra {unlisted}"
        )
    for name, expected in sorted(card.sha256.items()):
        if not (root / name).is_file():
            raise DataError(f"{who}: expected file {name!r}, got nothing")
        actual = sha256_of(root / name)
        if actual != expected.lower():
            raise SecurityError(
                f"{who}: checksum mismatch for {name!r}: expected sha256 {expected}, got {actual}"
            )
    weight_files = [*card.files.weights.values()]
    for member in card.files.members:
        weight_files += member.weights.values()
    for weights in dict.fromkeys(weight_files):
        load_weights(root / weights, entry=card.name)
    return _installed(root, card)


def member_models(entry: InstalledModel) -> list[tuple[str, InstalledModel]]:
    """The members of an ensemble entry, each as an entry of its own weights and fitted state
    (``(member name, model)``); a single-model entry is its own one member, named after it."""
    if not entry.card.files.members:
        return [(entry.name, entry)]
    members = []
    for member in entry.card.files.members:
        weights = {module: entry.path / file for module, file in member.weights.items()}
        main = weights.get("network") or weights.get("generator") or next(iter(weights.values()))
        state = entry.path / member.preprocessing if member.preprocessing else None
        model = replace(entry, weights_path=main, weights_paths=weights, fitted_state_path=state)
        members.append((member.name, model))
    return members


def _installed(root: Path, card: ModelCard) -> InstalledModel:
    weights = {module: root / file for module, file in card.files.weights.items()}
    main = weights.get("network") or weights.get("generator") or next(iter(weights.values()))
    preprocessing = card.files.preprocessing
    return InstalledModel(
        path=root,
        card=card,
        config_path=root / card.files.config,
        weights_path=main,
        fitted_state_path=root / preprocessing if preprocessing else None,
        weights_paths=weights,
        plugin_paths=[root / plugin for plugin in card.files.plugins],
    )


def _check_versions(card: ModelCard) -> None:
    for package, installed, needed in (
        ("voxelflow", __version__, card.requires.voxelflow),
        ("torch", torch.__version__, card.requires.torch),
    ):
        if version_tuple(installed) < version_tuple(needed):
            raise DataError(
                f"zoo entry {card.name!r}: expected {package} >= {needed}, got {installed}"
            )


def describe_assumptions(inputs: InputAssumptions) -> str:
    """One line: what every input is adapted to before the network sees it."""
    spacing = (
        "×".join("native" if v is None else f"{v:g}" for v in inputs.spacing) + " mm"
        if inputs.spacing
        else "the input's own spacing (the entry records none)"
    )
    parts = [f"inputs are resampled to {spacing}"]
    if inputs.orientation:
        parts.append(f"reoriented to {inputs.orientation}")
    if inputs.intensity:
        parts.append(f"expected to be {inputs.intensity}")
    return "; ".join(parts) + "; outputs are mapped back onto each input's own grid"


def install(
    source: PathLike, *, home: PathLike | None = None, force: bool = False
) -> InstalledModel:
    """Install an entry from a folder, an archive, an ``http(s)://`` URL or an index name.

    The entry is extracted (or copied) into a temporary folder inside the zoo home, verified
    (:func:`verify_entry`), then renamed to ``entries/<name>``.

    Raises:
        SecurityError, ConfigError, DataError: see :func:`safe_extract` and :func:`verify_entry`;
            nothing is left in the zoo home then.
        DataError: an entry of that name is installed and ``force`` is off.

    Example:
        >>> model = install_model("liver_ct.zip")  # doctest: +SKIP
        >>> model.card.name  # doctest: +SKIP
        'liver_ct'
    """
    root = zoo_home(home)
    (root / "entries").mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        entry_root = _unpack(_locate(str(source), root, incoming), incoming / "entry")
        model = verify_entry(entry_root, label=str(source))
        target = root / "entries" / model.card.name
        _replace(entry_root, target, force=force, trash=incoming / "previous")
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    logger.info("installed zoo entry %s %s in %s", model.card.name, model.card.version, target)
    logger.info("%s", describe_assumptions(model.card.inputs))
    return verify_entry(target)


def _locate(source: str, home: Path, incoming: Path) -> Path:
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        return _download(source, incoming)
    path = Path(source).expanduser()
    if path.exists():
        return path
    for record in read_index(home):
        if record.get("name") == source and record.get("source"):
            return _locate(str(record["source"]), home, incoming)
    raise DataError(f"expected an entry folder, archive, URL or index name, got {source!r}")


def _unpack(path: Path, destination: Path) -> Path:
    if path.is_dir():
        safe_copy_tree(path, destination)
    elif archive_kind(path):
        safe_extract(path, destination)
    else:
        raise DataError(f"expected an entry folder or a .zip/.tar.gz archive, got {str(path)!r}")
    if (destination / CARD_NAME).is_file():
        return destination
    children = [child for child in destination.iterdir() if child.is_dir()]
    if len(children) == 1 and (children[0] / CARD_NAME).is_file():
        return children[0]
    raise DataError(f"{path}: expected {CARD_NAME} at the top or in one folder, got none")


def _download(url: str, folder: Path) -> Path:
    from tqdm import tqdm

    name = Path(urllib.parse.urlparse(url).path).name or "entry.zip"
    target = folder / name
    with urllib.request.urlopen(url) as response, open(target, "wb") as stream:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                stream.write(chunk)
                bar.update(len(chunk))
    return target


def _replace(source: Path, target: Path, *, force: bool, trash: Path) -> None:
    if target.exists():
        if not force:
            raise DataError(
                f"zoo entry {target.name!r} is already installed at {str(target)!r}; "
                "remove it first or pass --force"
            )
        os.replace(target, trash)
    os.replace(source, target)


def installed_entries(*, home: PathLike | None = None) -> list[InstalledModel]:
    """Installed entries (cards read, checksums not re-verified), sorted by name."""
    folder = zoo_home(home) / "entries"
    models = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if (child / CARD_NAME).is_file():
            models.append(_installed(child, load_card(child)))
    return models


def read_index(home: PathLike | None = None) -> list[dict[str, Any]]:
    """Records of the local index file ``<home>/index.json`` (empty if there is none).

    Raises:
        DataError: the index is not valid JSON of the documented shape.
    """
    path = zoo_home(home) / INDEX_NAME
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["entries"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected {{'entries': [...]}} JSON, got: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected 'entries' to be a list of objects")
    return records


def resolve_model(name_or_path: PathLike, *, home: PathLike | None = None) -> InstalledModel:
    """An installed entry by name, or an entry folder used in place (verified either way).

    Raises:
        RegistryError: no installed entry of that name (with suggestions).

    Example:
        >>> model = resolve_model("liver_ct")  # doctest: +SKIP
        >>> model.card.version  # doctest: +SKIP
        '1.0.0'
    """
    path = Path(name_or_path).expanduser()
    if (path / CARD_NAME).is_file():
        return verify_entry(path)
    target = zoo_home(home) / "entries" / str(name_or_path)
    if "/" not in str(name_or_path) and (target / CARD_NAME).is_file():
        return verify_entry(target)
    names = [model.card.name for model in installed_entries(home=home)]
    raise RegistryError(
        f"expected an installed zoo entry or an entry folder, got {str(name_or_path)!r}."
        f"{suggest(str(name_or_path), names)} Installed: {', '.join(names) or 'none'} "
        f"(zoo home {zoo_home(home)})"
    )


def remove(name: str, *, home: PathLike | None = None) -> Path:
    """Delete an installed entry; returns the removed folder.

    Raises:
        RegistryError: no installed entry of that name.
    """
    target = zoo_home(home) / "entries" / name
    if "/" in name or name in ("", ".", "..") or not (target / CARD_NAME).is_file():
        resolve_model(name, home=home)  # raises with suggestions
    shutil.rmtree(target)
    logger.info("removed zoo entry %s", name)
    return target


def trusted_plugins(entry: InstalledModel, trust_code: bool) -> list[ModuleType]:
    """Import the entry's plugin modules, only when the user trusts its code.

    The entry's folder holding the plugins goes on ``sys.path`` so config plugin paths such
    as ``my_nets:FancyNet`` resolve.

    Raises:
        SecurityError: the entry ships plugin code and ``trust_code`` is off.
        RegistryError: a plugin module fails to import (naming the entry and module).
    """
    if not entry.plugin_paths:
        return []
    files = ", ".join(str(p.relative_to(entry.path)) for p in entry.plugin_paths)
    if not trust_code:
        raise SecurityError(
            f"zoo entry {entry.name!r} ships plugin code ({files}); it is never imported unless "
            "you pass --trust-code (read the code first: it runs with your permissions)"
        )
    logger.warning("importing plugin code of zoo entry %s (--trust-code): %s", entry.name, files)
    modules = []
    for plugin in entry.plugin_paths:
        folder = str(plugin.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            modules.append(importlib.import_module(plugin.stem))
        except Exception as exc:
            raise RegistryError(
                f"zoo entry {entry.name!r}: plugin module {plugin.name!r} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return modules
