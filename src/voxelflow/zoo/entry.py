"""The zoo entry format: ``model.yaml`` (a :class:`ModelCard`) and the files it lists.

An entry is a folder (or a ``.zip`` / ``.tar.gz`` of one) holding::

    model.yaml          the card: name, version, requirements, inputs, outputs, licence ...
    config.yaml         the resolved training config
    weights/<module>.pt state dict per module (or .safetensors), loaded with weights_only=True
    preprocessing.json  fitted preprocessing state (optional)
    plugins/*.py        plugin code (optional; imported only with --trust-code)
    README.md

An *ensemble* entry (``voxelflow zoo pack RUN_DIR --folds all``) holds one weight set per
member instead, listed in ``files.members``::

    members/fold_K/weights/<module>.pt|.safetensors   each member's weights
    members/fold_K/preprocessing.json                 each member's own fitted state
    postprocessing.json                               the ``voxelflow cv`` decision (optional)

``files.weights`` / ``files.preprocessing`` then name the first member's files, so tools that take
one network (ONNX export, transfer) still work; entries without ``members`` load as before.

Every file but ``model.yaml`` is listed in ``sha256`` with its checksum; installing verifies them
and refuses files that are not listed.

Example:
    >>> card = ModelCard(name="toy", version="1.0.0", application="segmentation",
    ...     files=EntryFiles(config="config.yaml", weights={"network": "weights/network.pt"}))
    >>> card.name
    'toy'
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from voxelflow.errors import ConfigError, DataError
from voxelflow.types import PathLike

CARD_NAME = "model.yaml"
ENTRY_FORMAT = "voxelflow-zoo-1"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Requirements(_Strict):
    """Minimum versions needed to run the entry."""

    voxelflow: str = Field("0.0.0", description="minimum voxelflow version")
    torch: str = Field("0.0.0", description="minimum torch version")


class InputAssumptions(_Strict):
    """What the network expects to be fed (before the entry's own preprocessing)."""

    modalities: list[str] = Field(default_factory=list, description="input channels, in order")
    orientation: str | None = Field(None, description="axis codes images are reoriented to")
    spacing: list[float | None] | None = Field(
        None, description="spacing images are resampled to (mm; a null axis keeps the input's)"
    )
    normalization: list[str] = Field(default_factory=list, description="normalisation steps")
    intensity: str | None = Field(
        None, description="what the intensities must be: 'CT in HU', 'MR-like' ... (from the plan)"
    )
    spatial_dims: int = Field(3, ge=2, le=3, description="2 or 3")
    window: list[int] | None = Field(None, description="training window size")


class OutputDescription(_Strict):
    """What the network produces."""

    channels: int = Field(1, ge=1, description="output channels (classes)")
    labels: dict[int, str] = Field(
        default_factory=dict, description="class index → label name (segmentation/classification)"
    )
    label_values: list[int] | None = Field(None, description="label value written per class")


class EnsembleMember(_Strict):
    """One member of an ensemble entry: its weights and its own fitted preprocessing state."""

    name: str = Field(description="member name, e.g. fold_0")
    weights: dict[str, str] = Field(description="module name → file")
    preprocessing: str | None = Field(None, description="the member's fitted state (JSON)")


class EntryFiles(_Strict):
    """Paths (relative to the entry folder) of the entry's files."""

    config: str = Field("config.yaml", description="resolved training config")
    weights: dict[str, str] = Field(description="module name (network, generator ...) → file")
    preprocessing: str | None = Field(None, description="fitted preprocessing state (JSON)")
    readme: str | None = Field("README.md", description="human-readable description")
    plugins: list[str] = Field(default_factory=list, description="plugin modules (.py files)")
    members: list[EnsembleMember] = Field(
        default_factory=list,
        description="ensemble members, run one after another and averaged (empty: one model)",
    )
    postprocessing: str | None = Field(
        None, description="an ensemble's postprocessing decision (cv/postprocessing.json)"
    )

    @field_validator("members")
    @classmethod
    def _check_members(cls, value: list[EnsembleMember]) -> list[EnsembleMember]:
        names = [member.name for member in value]
        if len(set(names)) != len(names):
            raise ValueError(f"expected distinct member names, got {names}")
        return value


class ModelCard(_Strict):
    """The content of ``model.yaml``; unknown keys are refused."""

    format: str = Field(ENTRY_FORMAT, description="entry format tag")
    name: str = Field(description="entry name (letters, digits, '_', '.', '-')")
    version: str = Field(description="entry version, e.g. 1.0.0")
    application: str = Field(description="segmentation, regression, classification ...")
    description: str = Field("", description="one paragraph on what the model does")
    requires: Requirements = Field(default_factory=Requirements)
    inputs: InputAssumptions = Field(default_factory=InputAssumptions)
    outputs: OutputDescription = Field(default_factory=OutputDescription)
    network: dict[str, Any] = Field(
        default_factory=dict, description="network name and options (from the config)"
    )
    training_data: str = Field("", description="what the model was trained on")
    checked_on: str = Field(
        "", description="what the model was checked on (held-out and real subjects) and the figures"
    )
    limitations: str = Field("", description="known failure modes and what the model does not know")
    license: str = Field("unspecified", description="licence of the weights")
    citation: str = Field("", description="how to cite the model")
    metrics: dict[str, float] = Field(default_factory=dict, description="validation metrics")
    files: EntryFiles
    sha256: dict[str, str] = Field(default_factory=dict, description="file → sha256 hex digest")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_PATTERN.match(value):
            raise ValueError(
                f"expected letters, digits, '_', '.', '-' (not starting with a symbol), got {value!r}"
            )
        return value

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        if value != ENTRY_FORMAT:
            raise ValueError(f"expected {ENTRY_FORMAT!r}, got {value!r}")
        return value

    def listed_files(self) -> list[str]:
        """Every file the card names (weights, config, plugins, preprocessing, README)."""
        names = [self.files.config, *self.files.weights.values(), *self.files.plugins]
        names += [name for name in (self.files.preprocessing, self.files.readme) if name]
        for member in self.files.members:
            names += [
                *member.weights.values(),
                *([member.preprocessing] if member.preprocessing else []),
            ]
        if self.files.postprocessing:
            names.append(self.files.postprocessing)
        return list(dict.fromkeys(names))

    @property
    def is_ensemble(self) -> bool:
        """Whether the entry packs several weight sets (``files.members``)."""
        return bool(self.files.members)


def load_card(path: PathLike) -> ModelCard:
    """Read and validate ``model.yaml`` (or the ``model.yaml`` inside a folder).

    Raises:
        ConfigError: unreadable YAML, unknown keys or missing fields (each key path listed).
        DataError: no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    if not path.is_file():
        raise DataError(f"expected a zoo model card {CARD_NAME}, got nothing at {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: expected valid YAML, got: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {_explain(error)}"
            for error in exc.errors()
        )
        raise ConfigError(f"{path}: invalid model card: {problems}") from exc


def _explain(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "missing required field"
    return str(error["msg"])


def dump_card(card: ModelCard, path: PathLike) -> Path:
    """Write the card as YAML (fields in declaration order)."""
    path = Path(path)
    text = yaml.safe_dump(card_data(card), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def card_data(card: ModelCard) -> dict[str, Any]:
    """The card as plain data; a single model's card leaves out the (empty) ensemble keys, so
    it reads exactly as cards written before ensembles (and by older voxelflow versions)."""
    data = card.model_dump()
    if not card.files.members:
        data["files"].pop("members", None)
        if data["files"].get("postprocessing") is None:
            data["files"].pop("postprocessing", None)
    return data


def sha256_of(path: PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def version_tuple(text: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` → ``(2, 13, 0)`` (non-numeric suffixes ignored)."""
    numbers = []
    for part in text.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)
