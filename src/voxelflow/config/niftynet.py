"""Import a NiftyNet ``.ini`` configuration as a voxelflow :class:`ExperimentConfig`.

Every ``[SECTION] key = value`` of the file gets a :class:`ConversionNote` saying where it went
(``mapped``), what is close but not identical (``approximated``), what voxelflow lacks
(``not supported``) and what it does not need (``ignored``, with the reason). Keys NiftyNet
accepted in the wrong section (it validated keys globally and then silently ignored them, e.g.
``queue_length`` under ``[SYSTEM]``) are applied where they belong and reported as
``misplaced``; unknown keys are reported as ``unknown`` with a suggestion.

Sections other than SYSTEM, NETWORK, TRAINING, INFERENCE, EVALUATION and the application
sections are input sections; each becomes a folder-pattern column of the dataset table named
after the section, and the application section's role keys (``image = T1,T2``) become
``dataset.inputs``.

Example:
    >>> experiment, notes = convert_niftynet_ini("config.ini")  # doctest: +SKIP
    >>> print("\\n".join(str(n) for n in notes if n.status != "mapped"))  # doctest: +SKIP
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelflow.config import niftynet_keys as keys
from voxelflow.config import niftynet_training as training
from voxelflow.config.niftynet_keys import ROLES, Outcome, State, as_bool, as_int, as_ints, as_list
from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import ConfigError, MissingFileError
from voxelflow.registry import suggest

__all__ = [
    "APPLICATION_SECTIONS",
    "ConversionNote",
    "convert_niftynet_ini",
    "convert_niftynet_parser",
]

APPLICATION_SECTIONS = {
    "SEGMENTATION": "segmentation",
    "REGRESSION": "regression",
    "CLASSIFICATION": "classification",
    "AUTOENCODER": "autoencoder",
    "GAN": "gan",
}
SYSTEM_SECTIONS: dict[str, dict[str, Callable[[State, str], Outcome]]] = {
    "SYSTEM": training.SYSTEM_KEYS,
    "NETWORK": keys.NETWORK_KEYS,
    "TRAINING": training.TRAINING_KEYS,
    "INFERENCE": training.INFERENCE_KEYS,
    "EVALUATION": training.EVALUATION_KEYS,
}
_INTERPOLATION = {0: "nearest", 1: "linear"}
#: NiftyNet defaults that differ from voxelflow's (user_parameters_default.py).
NIFTYNET_DEFAULTS: dict[str, Any] = {
    "optimizer": {"name": "adam", "lr": 0.01},
    "training.max_iterations": 10000,
    "training.batch_size": 2,
    "training.checkpoint_every": 500,
    "training.log_every": 20,
    "training.validate_every": 0,
    "sampling.windows_per_subject": 1,
    "sampling.queue_length": 5,
    "preprocessing.orientation": None,
    "split.validation": 0.0,
}


@dataclass(frozen=True)
class ConversionNote:
    """What became of one ``[SECTION] key = value`` of the NiftyNet file."""

    section: str
    key: str
    value: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key} = {self.value}: {self.status}: {self.detail}"


def convert_niftynet_ini(
    path: str | os.PathLike[str], *, overrides: Mapping[str, str] | None = None
) -> tuple[ExperimentConfig, list[ConversionNote]]:
    """Read a NiftyNet ``.ini`` file and convert it.

    Args:
        path: the INI file.
        overrides: NiftyNet command-line style ``{key: value}`` (``--max_iter 10``), put into the
            section each key belongs to.

    Returns:
        The experiment and one note per key (plus notes on the whole file).

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: an unreadable INI (file and line), a value of the wrong type, or a
            converted experiment that does not validate.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"NiftyNet config not found: expected an existing file, got {str(path)!r}"
        )
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except configparser.Error as exc:
        raise ConfigError(f"{path}: invalid INI file: {exc}") from None
    for key, value in (overrides or {}).items():
        section = _home_section(key, parser) or "SYSTEM"
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, str(value))
    return convert_niftynet_parser(parser, origin=str(path), config_dir=path.parent)


def convert_niftynet_parser(
    parser: configparser.ConfigParser,
    *,
    origin: str = "<ini>",
    config_dir: str | os.PathLike[str] = ".",
) -> tuple[ExperimentConfig, list[ConversionNote]]:
    """Convert an already-read INI (see :func:`convert_niftynet_ini`); ``model_dir`` is resolved
    against ``config_dir`` as NiftyNet did."""
    from voxelflow.config.load import validate_experiment

    sections = {re.sub(r"[^0-9a-zA-Z_\- ]", "", name): name for name in parser.sections()}
    state = State(config_dir=Path(config_dir))
    for dotted, value in NIFTYNET_DEFAULTS.items():  # the file relies on NiftyNet's defaults
        state.put(dotted, value)
    notes: list[ConversionNote] = []
    applications = [s for s in sections if s.upper() in APPLICATION_SECTIONS]
    roles: dict[str, str] = {}
    if applications:
        state.application = APPLICATION_SECTIONS[applications[0].upper()]
        state.put("application", state.application)
        roles = _application_section(
            parser[sections[applications[0]]], applications[0], state, notes
        )
        for extra in applications[1:]:
            notes.append(
                ConversionNote(extra, "*", "", "ignored", f"only [{applications[0]}] is used")
            )
    else:
        notes.append(
            ConversionNote(
                "*", "*", "", "approximated", "no application section; segmentation assumed"
            )
        )
    for clean, name in sections.items():
        upper = clean.upper()
        if upper in SYSTEM_SECTIONS:
            _system_section(parser[name], upper, state, notes)
        elif upper == "REGISTRATION":
            notes.append(
                ConversionNote(clean, "*", "", "not supported", "registration is out of scope")
            )
        elif upper not in APPLICATION_SECTIONS:
            _input_section(parser[name], clean, roles.get(clean), state, notes)
    _finish(state, notes)
    return validate_experiment(state.data, origin=origin), notes


def _home_section(key: str, parser: configparser.ConfigParser) -> str | None:
    for section, table in SYSTEM_SECTIONS.items():
        if key in table:
            return section
    app = [s for s in parser.sections() if s.upper() in APPLICATION_SECTIONS]
    return app[0] if app and key in APPLICATION_KEYS else None


def _system_section(
    section: configparser.SectionProxy, name: str, state: State, notes: list[ConversionNote]
) -> None:
    for key, value in section.items():
        handler = SYSTEM_SECTIONS[name].get(key)
        home = name
        if handler is None:
            home = next((s for s, table in SYSTEM_SECTIONS.items() if key in table), "")
            handler = SYSTEM_SECTIONS[home].get(key) if home else None
        if handler is None and key in APPLICATION_KEYS and key not in ROLES:
            home = state.application.upper()

            def handler(state: State, value: str, key: str = key) -> Outcome:
                return _application_key(key, value, state, f"[{name}] {key}")

        if handler is None:
            known = sorted({k for table in SYSTEM_SECTIONS.values() for k in table})
            hint = (
                suggest(key, known)
                or f" Keys of [{name}]: {', '.join(sorted(SYSTEM_SECTIONS[name]))}"
            )
            notes.append(
                ConversionNote(name, key, value, "unknown", f"not a NiftyNet key; ignored.{hint}")
            )
            continue
        status, detail = _run(handler, state, value, f"[{name}] {key}")
        if home != name:
            status, detail = (
                "misplaced",
                (
                    f"belongs in [{home}] (NiftyNet silently ignored it here); "
                    f"applied anyway: {detail}"
                ),
            )
        notes.append(ConversionNote(name, key, value, status, detail))


def _run(handler: Callable[[State, str], Outcome], state: State, value: str, where: str) -> Outcome:
    try:
        return handler(state, value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where} = {value!r}: {exc}") from None


# --------------------------------------------------------------------------- application section
APPLICATION_KEYS = {
    "num_classes",
    "output_prob",
    "label_normalisation",
    "softmax",
    "evaluation_units",
    "do_mixup",
    "mixup_alpha",
    "mix_match",
    "min_sampling_ratio",
    "compulsory_labels",
    "rand_samples",
    "min_numb_labels",
    "proba_connect",
    "loss_border",
    "error_map",
    "inference_type",
    "noise_stddev",
    "n_interpolations",
    "noise_size",
    *ROLES,
    "inferred",
    "value",
    "feature",
}


def _application_section(
    section: configparser.SectionProxy, name: str, state: State, notes: list[ConversionNote]
) -> dict[str, str]:
    roles: dict[str, str] = {}
    inputs: dict[str, list[str]] = {}
    for key, value in section.items():
        if key in ROLES:
            columns = as_list(value)
            if columns:
                inputs[ROLES[key]] = columns
                roles.update({c: ROLES[key] for c in columns if c not in roles})
            status, detail = "mapped", f"dataset.inputs.{ROLES[key]} = {columns}"
        else:
            status, detail = _application_key(key, value, state, f"[{name}] {key}")
        notes.append(ConversionNote(name, key, value, status, detail))
    state.put("dataset.inputs", inputs)
    return roles


def _application_key(key: str, value: str, state: State, where: str) -> Outcome:
    if key == "num_classes":
        count = as_int(value, key=where)
        return (
            ("mapped", state.put("num_classes", count) + f" = {count}")
            if count > 0
            else ("ignored", "num_classes <= 0: found from the label values")
        )
    if key == "output_prob":
        return "mapped", state.put(
            "inference.save_probabilities", as_bool(value, key=where)
        ) + f" = {value}"
    if key == "label_normalisation":
        return "mapped", "label values are always mapped to 0..K-1 for training and back on output"
    if key == "softmax":
        return (
            ("mapped", "losses apply softmax inside")
            if as_bool(value, key=where)
            else ("not supported", "losses without softmax: set loss.activation = none by hand")
        )
    if key == "evaluation_units":
        units = value.strip().lower()
        if units == "cc":
            return "not supported", "connected-component units; see the lesion-wise metrics"
        return "approximated", "metrics are computed per label (background excluded)"
    if key in ("inferred", "value", "feature"):
        return "ignored", "inference outputs are found by `voxelflow evaluate`"
    if key == "noise_size":
        return "mapped", state.put("network.noise_size", as_int(value, key=where)) + f" = {value}"
    if key in APPLICATION_KEYS:
        return "not supported", f"{key} has no voxelflow equivalent yet"
    hint = suggest(key, sorted(APPLICATION_KEYS))
    return "unknown", f"not a NiftyNet key; ignored.{hint}"


# --------------------------------------------------------------------------- input sections
def _input_section(
    section: configparser.SectionProxy,
    name: str,
    role: str | None,
    state: State,
    notes: list[ConversionNote],
) -> None:
    if role is None:
        notes.append(
            ConversionNote(
                name, "*", "", "ignored", "input section used by no role of the application"
            )
        )
    folder: dict[str, Any] = {"path": ".", "glob": "*"}
    for key, value in section.items():
        status, detail = _input_key(key, value, name, role, folder, state)
        notes.append(ConversionNote(name, key, value, status, detail))
    state.put(f"dataset.folders.{name}", folder)


def _input_key(
    key: str, value: str, name: str, role: str | None, folder: dict[str, Any], state: State
) -> Outcome:
    where = f"[{name}] {key}"
    if key == "path_to_search":
        paths = as_list(value)
        folder["path"] = paths[0] if paths else "."
        if len(paths) > 1:
            return (
                "approximated",
                f"dataset.folders.{name}.path = {paths[0]} (only the first folder is searched)",
            )
        return "mapped", f"dataset.folders.{name}.path = {folder['path']}"
    if key in ("filename_contains", "filename_not_contains"):
        target = "contains" if key == "filename_contains" else "not_contains"
        folder[target] = as_list(value)
        return "mapped", f"dataset.folders.{name}.{target} = {folder[target]}"
    if key == "csv_file":
        if not value.strip().strip("'\""):
            return "ignored", "empty: the files are found by the folder pattern"
        return (
            "not supported",
            "per-section file lists: merge them into one CSV table (dataset.csv)",
        )
    if key == "filename_removefromid":
        return (
            "not supported",
            f"set dataset.folders.{name}.subject_regex (a regex whose first group is the id)",
        )
    if key == "interp_order":
        return _interp_order(as_int(value, key=where), role, state)
    if key == "pixdim":
        spacing = [float(v) for v in as_list(value)]
        if spacing:
            return _shared("preprocessing.spacing", spacing, state)
        return "ignored", "empty: spacing kept"
    if key == "axcodes":
        codes = "".join(c.upper() for c in as_list(value))
        if codes:
            return _shared("preprocessing.orientation", codes, state)
        return "ignored", "empty: orientation kept"
    if key == "spatial_window_size":
        window = as_ints(value, key=where, pad_to=3, fill=1)
        target = "sampling.label_window" if role in ("label", "target") else "sampling.window"
        if target == "sampling.label_window" and window == state.get("sampling.window"):
            return "mapped", "same as the image window"
        return _shared(target, window, state)
    if key == "loader":
        return "ignored", "readers are chosen by file suffix"
    if key in ("csv_data_file", "to_ohe"):
        return "not supported", "contrib CSV reader: give values as columns of a dataset CSV"
    known = [
        "csv_file",
        "path_to_search",
        "filename_contains",
        "filename_not_contains",
        "filename_removefromid",
        "interp_order",
        "loader",
        "pixdim",
        "axcodes",
        "spatial_window_size",
    ]
    hint = suggest(key, known)
    if not hint and key in {k for t in SYSTEM_SECTIONS.values() for k in t}:
        hint = " It is a key of a system section, not of an input section."
    return "unknown", f"not a NiftyNet input-section key; ignored.{hint}"


def _shared(dotted: str, value: Any, state: State) -> Outcome:
    previous = state.get(dotted)
    if previous is not None and previous != value:
        return "approximated", f"{dotted} is one setting for all inputs; kept {previous}"
    return "mapped", f"{state.put(dotted, value)} = {value}"


def _interp_order(order: int, role: str | None, state: State) -> Outcome:
    if role in ("label", "sampling_map"):
        if order > 0:
            return "approximated", "labels are always resampled with nearest interpolation"
        return "mapped", "preprocessing.label_interpolation = nearest"
    if order < 0:
        return "ignored", "integer inputs keep their values (nearest)"
    method = _INTERPOLATION.get(order, "bspline")
    return _shared("preprocessing.image_interpolation", method, state)


# --------------------------------------------------------------------------- final assembly
def _finish(state: State, notes: list[ConversionNote]) -> None:
    state.data.setdefault("dataset", {}).setdefault("inputs", {"image": ["image"]})
    if state.application == "segmentation" and "loss" not in state.data:
        state.put("loss", {"name": "dice", "squared": True})  # NiftyNet's default loss_type Dice
    mask = (
        {k: v for k, v in state.mask.items() if k != "enabled"} if state.mask.get("enabled") else {}
    )
    state.put(
        "preprocessing.normalization",
        [{"name": name, **options, **mask} for name, options in state.normalizers.items()],
    )
    augmentation = []
    if "flip" in state.augment:
        augmentation.append({"name": "flip", **state.augment["flip"]})
    affine = dict(state.augment.get("affine", {}))
    per_axis = affine.pop("rotation_per_axis", None)
    if per_axis is not None and "rotation" not in affine:
        affine["rotation"] = per_axis
    if affine:
        augmentation.append({"name": "affine", **affine})
    if "elastic" in state.augment:
        augmentation.append({"name": "elastic", **state.augment.get("elastic_options", {})})
    if augmentation:
        state.put("augmentation", augmentation)
    if state.save_every_zero:
        state.put(
            "training.checkpoint_every", max(int(state.get("training.max_iterations", 1000)), 1)
        )
    if state.border is not None:
        _border_to_overlap(state, notes)


def _border_to_overlap(state: State, notes: list[ConversionNote]) -> None:
    window = state.get("inference.window") or state.get("sampling.window") or [64, 64, 64]
    fractions = [2 * b / w for b, w in zip(state.border or [], window) if w > 0]
    overlap = min(max(fractions, default=0.0), 0.9)
    if overlap > 0:
        state.put("inference.overlap", round(overlap, 4))
        state.put("inference.blend", "crop")
    for index, note in enumerate(notes):
        if (note.section.upper(), note.key) == ("INFERENCE", "border"):
            detail = f"inference.overlap = {overlap:.4g} (2·{state.border}/{window}), inference.blend = crop"
            notes[index] = ConversionNote(
                note.section, note.key, note.value, "approximated", detail
            )
