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
import copy
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import ConfigError, MissingFileError
from voxelflow.niftynet import keys as keys
from voxelflow.niftynet import training as training
from voxelflow.niftynet.assembly import finish as _finish
from voxelflow.niftynet.assembly import under as _under
from voxelflow.niftynet.defaults import NIFTYNET_DEFAULTS as TABLE
from voxelflow.niftynet.keys import (
    ROLES,
    ConversionNote,
    Outcome,
    State,
    as_bool,
    as_int,
    as_ints,
    as_list,
    as_number,
)
from voxelflow.registry import suggest

log = logging.getLogger(__name__)

__all__ = [
    "APPLICATION_SECTIONS",
    "ConversionNote",
    "NiftyNetConversion",
    "NiftyNetSettings",
    "convert_niftynet",
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
#: the input roles each NiftyNet application reads (its SUPPORTED_INPUT)
APPLICATION_ROLES = {
    "segmentation": {"image", "label", "weight", "sampler", "inferred", "value"},
    "regression": {"image", "output", "weight", "sampler", "inferred"},
    "classification": {"image", "label", "sampler", "inferred"},
    "autoencoder": {"image", "feature"},
    "gan": {"image", "conditioning"},
}
_INTERPOLATION = {0: "nearest", 1: "linear"}
_TRAINING = TABLE["TRAINING"]
_NETWORK = TABLE["NETWORK"]
#: NiftyNet 0.6 defaults (niftynet_defaults.py) a converted file relies on, as voxelflow keys.
NIFTYNET_DEFAULTS: dict[str, Any] = {
    "optimizer": {
        "name": keys.OPTIMIZERS[_TRAINING["optimiser"]][0],
        **keys.OPTIMIZERS[_TRAINING["optimiser"]][1],
        "lr": _TRAINING["lr"],
    },
    "training.max_iterations": _TRAINING["max_iter"],
    "training.batch_size": _NETWORK["batch_size"],
    "training.checkpoint_every": _TRAINING["save_every_n"],
    "training.log_every": _TRAINING["tensorboard_every_n"],
    "training.keep_last": _TRAINING["max_checkpoints"],
    "training.validate_every": max(_TRAINING["validation_every_n"], 0),
    "training.num_workers": TABLE["SYSTEM"]["num_threads"],
    "sampling.windows_per_subject": _TRAINING["sample_per_volume"],
    "sampling.queue_length": _NETWORK["queue_length"],
    "preprocessing.orientation": None,
    "split.validation": _TRAINING["exclude_fraction_for_validation"],
    "split.test": _TRAINING["exclude_fraction_for_inference"],
    "inference.checkpoint": "last",  # inference_iter = -1: the latest checkpoint
}
_UNKNOWN = "not a NiftyNet 0.6 key (NiftyNet 0.6 refused the file)"
#: keys of NiftyNet 0.1's single [settings] section; a file using them predates 0.2
_PRE_0_2_KEYS = {"net_name", "application_type", "image_size", "label_size", "spatial_rank"}


@dataclass(frozen=True)
class NiftyNetSettings:
    """What NiftyNet's own commands did beyond the experiment (used by the ``net_*`` commands).

    Paths are resolved as NiftyNet resolved them: ``model_dir`` against the working folder
    (default ``<config folder>/model``), the others against ``model_dir``.
    """

    application: str
    model_dir: Path
    save_seg_dir: Path
    save_csv_dir: Path
    output_postfix: str = "_niftynet_out"
    dataset_to_infer: str = ""
    inference_iter: int = -1
    cuda_devices: str | None = None
    inferred_sections: tuple[str, ...] = ()
    #: why the file can only evaluate (no image role), or None
    cannot_run: str | None = None
    #: NiftyNet's starting_iter: 0 = random weights, -1 = the latest checkpoint
    starting_iter: int = 0
    #: folder patterns of the ``inferred`` input sections (section → FolderInput fields)
    inferred_folders: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NiftyNetConversion:
    """A converted NiftyNet file: the experiment, one note per key, and the command settings."""

    experiment: ExperimentConfig
    notes: list[ConversionNote]
    settings: NiftyNetSettings


def convert_niftynet_ini(
    path: str | os.PathLike[str],
    *,
    overrides: Mapping[str, str] | None = None,
    application: str | None = None,
) -> tuple[ExperimentConfig, list[ConversionNote]]:
    """Read a NiftyNet ``.ini`` file and convert it (see :func:`convert_niftynet`).

    Returns:
        The experiment and one note per key (plus notes on the whole file).
    """
    converted = convert_niftynet(path, overrides=overrides, application=application)
    return converted.experiment, converted.notes


def read_niftynet_ini(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A NiftyNet ``.ini`` file as voxelflow config data (the ``voxelflow.config_readers``
    entry point ``ini``: how :func:`voxelflow.config.load.load_experiment` reads it). Every
    key that is not mapped one to one is logged as a warning."""
    experiment, notes = convert_niftynet_ini(path)
    for note in notes:
        if note.status != "mapped":
            log.warning("%s", note)
    return experiment.model_dump(mode="json")


def convert_niftynet(
    path: str | os.PathLike[str],
    *,
    overrides: Mapping[str, str] | None = None,
    application: str | None = None,
) -> NiftyNetConversion:
    """Read a NiftyNet ``.ini`` file and convert it.

    Args:
        path: the INI file.
        overrides: NiftyNet command-line style ``{key: value}`` (``--max_iter 10``), put into the
            section each key belongs to (NiftyNet: system and application sections only).
        application: the application of the command (``net_segment`` → ``segmentation``); the
            file must then have its section (``[SEGMENTATION]``), as NiftyNet required. None: the
            file's own application section.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: an unreadable INI (file and line), a file NiftyNet 0.6 could not run either
            (a model-zoo download manifest, a pre-0.2 layout, no application section), a value
            of the wrong type, something voxelflow cannot run faithfully (naming the key), or a
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
        raise ConfigError(f"{path}: invalid INI file: {' '.join(str(exc).split())}") from None
    for key, value in (overrides or {}).items():
        section = _home_section(key, parser, application) or "SYSTEM"
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, str(value))
    return convert_parser(parser, origin=str(path), config_dir=path.parent, application=application)


def convert_niftynet_parser(
    parser: configparser.ConfigParser,
    *,
    origin: str = "<ini>",
    config_dir: str | os.PathLike[str] = ".",
    application: str | None = None,
) -> tuple[ExperimentConfig, list[ConversionNote]]:
    """Convert an already-read INI (see :func:`convert_niftynet`); returns experiment and notes."""
    converted = convert_parser(
        parser, origin=origin, config_dir=config_dir, application=application
    )
    return converted.experiment, converted.notes


def convert_parser(
    parser: configparser.ConfigParser,
    *,
    origin: str = "<ini>",
    config_dir: str | os.PathLike[str] = ".",
    application: str | None = None,
) -> NiftyNetConversion:
    """Convert an already-read INI (see :func:`convert_niftynet`)."""
    from voxelflow.config.load import validate_experiment

    _refuse_what_niftynet_could_not_run(parser, origin)
    sections = {_section_name(name): name for name in parser.sections()}
    renamed = "APPLICATION" in sections and "SYSTEM" not in sections
    if renamed:  # NiftyNet 0.2.0 called [SYSTEM] [APPLICATION]
        sections = {("SYSTEM" if k == "APPLICATION" else k): v for k, v in sections.items()}
    state = State(config_dir=Path(config_dir))
    for dotted, value in copy.deepcopy(NIFTYNET_DEFAULTS).items():  # NiftyNet's defaults
        state.put(dotted, value)
    notes: list[ConversionNote] = []
    if renamed:
        notes.append(
            ConversionNote(
                "APPLICATION",
                "*",
                "",
                "mapped",
                "NiftyNet 0.2.0's name of [SYSTEM] (renamed in 0.2.1); read as [SYSTEM]",
            )
        )
    app_section = _application_section_name(sections, application, origin, notes)
    state.application = APPLICATION_SECTIONS[app_section]
    state.put("application", state.application)
    roles: dict[str, str] = {}
    if app_section in sections:
        roles = _application_section(parser[sections[app_section]], app_section, state, notes)
    for clean, name in sections.items():
        if clean in SYSTEM_SECTIONS:
            _system_section(parser[name], clean, state, notes)
        elif clean == app_section:
            continue
        elif clean in APPLICATION_SECTIONS or clean == "REGISTRATION":
            notes.append(
                ConversionNote(
                    clean, "*", "", "ignored", f"section of another application than {app_section}"
                )
            )
        else:
            _input_section(parser[name], clean, roles.get(clean), state, notes)
    state.extras["roles"] = dict(roles)
    _drop_missing_sections(roles, sections, app_section, state, notes)
    _finish(state, notes)
    experiment = validate_experiment(state.data, origin=origin)
    return NiftyNetConversion(experiment, notes, _settings(state))


def _drop_missing_sections(
    roles: Mapping[str, str],
    sections: Mapping[str, str],
    app_section: str,
    state: State,
    notes: list[ConversionNote],
) -> None:
    """A role naming a section the file lacks: NiftyNet failed when it read that role (its
    evaluation reads only image, label and inferred), so the role is dropped with a note;
    without any image section nothing can run."""
    inputs: dict[str, list[str]] = state.data.setdefault("dataset", {}).setdefault("inputs", {})
    for section, role in roles.items():
        if section in sections or role == "inferred":
            continue
        inputs[role] = [c for c in inputs.get(role, []) if c != section]
        if not inputs[role]:
            del inputs[role]
        key = _role_key(role)
        detail = (
            f"no [{section}] section in the file: dropped from dataset.inputs.{role} "
            "(NiftyNet failed wherever it read this role)"
        )
        for index, old in enumerate(notes):
            if (old.section, old.key) == (app_section, key):
                notes[index] = ConversionNote(app_section, key, old.value, "not supported", detail)
    if not inputs.get("image"):
        # an evaluation-only file (inferred + label): it trains and infers nothing
        state.extras["cannot_run"] = (
            f"[{app_section}] image: required to train or infer, naming an input section "
            f"of the file (found: {', '.join(s for s in sections if s not in SYSTEM_SECTIONS)})"
        )


def _section_name(name: str) -> str:
    """NiftyNet's section name: characters outside ``[0-9a-zA-Z_- ]`` dropped; case kept."""
    return re.sub(r"[^0-9a-zA-Z_\- ]+", "", name.strip())


def _role_key(role: str) -> str:
    return next((k for k, v in ROLES.items() if v == role), role)


def _refuse_what_niftynet_could_not_run(parser: configparser.ConfigParser, origin: str) -> None:
    """Files that are not NiftyNet 0.2+ configurations are refused with the reason."""
    names = {_section_name(s) for s in parser.sections()}
    every_key = {k for s in parser.sections() for k in parser[s]}
    downloads = [s for s in parser.sections() if {"url", "action"} <= set(parser[s])]
    if downloads and not names & set(SYSTEM_SECTIONS):
        raise ConfigError(
            f"{origin}: a NiftyNet model-zoo download manifest (section [{downloads[0]}] has url "
            "and action), not a configuration; its weights are TensorFlow checkpoints voxelflow "
            "cannot load, and nothing is downloaded"
        )
    if not names & {"SYSTEM", "NETWORK"}:
        old = sorted(every_key & _PRE_0_2_KEYS)
        what = (
            f"a NiftyNet 0.1 configuration ({', '.join(old)}; NiftyNet 0.2 replaced it)"
            if old or "settings" in names
            else "not a NiftyNet 0.2+ configuration"
        )
        raise ConfigError(
            f"{origin}: {what}: no [SYSTEM] or [NETWORK] section; rewrite it with [SYSTEM], "
            "[NETWORK], [TRAINING], [INFERENCE] and an application section such as [SEGMENTATION]"
        )


def _application_section_name(
    sections: Mapping[str, str],
    application: str | None,
    origin: str,
    notes: list[ConversionNote],
) -> str:
    """NiftyNet's application section: the command's (required), else the file's only one."""
    by_app = {v: k for k, v in APPLICATION_SECTIONS.items()}
    if application is not None:
        if application not in by_app:
            raise ConfigError(f"expected an application {', '.join(by_app)}, got {application!r}")
        wanted = by_app[application]
        if wanted not in sections:
            found = [s for s in sections if s in APPLICATION_SECTIONS]
            hint = f" (it has [{found[0]}]: use net_{_COMMANDS[found[0]]})" if found else ""
            raise ConfigError(
                f"{origin}: the {application} application requires a [{wanted}] section, "
                f"as NiftyNet did{hint}"
            )
        return wanted
    present = [s for s in sections if s in APPLICATION_SECTIONS]
    if not present and "REGISTRATION" in sections:
        raise ConfigError(
            f"{origin}: [REGISTRATION]: label-driven registration is out of voxelflow's scope"
        )
    if not present:
        notes.append(
            ConversionNote(
                "*",
                "*",
                "",
                "approximated",
                "no application section: segmentation assumed "
                "(NiftyNet took the application from the command)",
            )
        )
        return "SEGMENTATION"
    for extra in present[1:]:
        notes.append(ConversionNote(extra, "*", "", "ignored", f"only [{present[0]}] is used"))
    return present[0]


_COMMANDS = {
    "SEGMENTATION": "segment",
    "REGRESSION": "regress",
    "CLASSIFICATION": "classify",
    "AUTOENCODER": "autoencoder",
    "GAN": "gan",
}


def _home_section(
    key: str, parser: configparser.ConfigParser, application: str | None
) -> str | None:
    for section, table in SYSTEM_SECTIONS.items():
        if key in table:
            return section
    if key not in APPLICATION_KEYS:
        return None
    if application is not None:
        return {v: k for k, v in APPLICATION_SECTIONS.items()}.get(application)
    app = [s for s in parser.sections() if _section_name(s) in APPLICATION_SECTIONS]
    return app[0] if app else None


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
                ConversionNote(
                    name,
                    key,
                    value,
                    "unknown",
                    f"not a NiftyNet 0.6 key (NiftyNet 0.6 refused the file); ignored.{hint}",
                )
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


def _keyed_application_key(key: str, where: str, state: State, value: str) -> Outcome:
    """:func:`_application_key` as a ``(state, value)`` handler of :func:`_run`."""
    return _application_key(key, value, state, where)


def _run(handler: Callable[[State, str], Outcome], state: State, value: str, where: str) -> Outcome:
    try:
        return handler(state, value)
    except ConfigError as exc:
        raise ConfigError(f"{where} = {value.strip()}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where} = {value.strip()!r}: {exc}") from None


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
#: NiftyNet's autoencoder inference_type → voxelflow's inference.mode
AUTOENCODER_MODES = {
    "encode": "encode",
    "encode-decode": "reconstruct",
    "sample": "sample",
    "linear_interpolation": "interpolate",
}


def _application_section(
    section: configparser.SectionProxy, name: str, state: State, notes: list[ConversionNote]
) -> dict[str, str]:
    """The application section's keys; returns ``{input section: role}``."""
    roles: dict[str, str] = {}
    inputs: dict[str, list[str]] = {}
    allowed = APPLICATION_ROLES[state.application]
    for key, value in section.items():
        if key in ROLES or key in ("inferred", "value", "feature"):
            columns = as_list(value)
            if key not in allowed:
                status, detail = "ignored", f"not an input of NiftyNet's {state.application}"
            elif key in ROLES:
                if columns:
                    inputs[ROLES[key]] = columns
                    roles.update({c: ROLES[key] for c in columns if c not in roles})
                status, detail = "mapped", f"dataset.inputs.{ROLES[key]} = {columns}"
                if key == "conditioning" and columns:
                    state.put("task.conditioning_role", "conditioning")
                    detail += ", task.conditioning_role = conditioning"
            elif key == "inferred":
                roles.update({c: "inferred" for c in columns if c not in roles})
                state.extras["inferred_sections"] = columns
                status, detail = "mapped", "the inference outputs the net_* evaluation reads"
            else:
                status, detail = "not supported", f"{key} inputs: no voxelflow equivalent"
        else:
            where = f"[{name}] {key}"
            status, detail = _run(partial(_keyed_application_key, key, where), state, value, where)
        notes.append(ConversionNote(name, key, value, status, detail))
    state.put("dataset.inputs", inputs)
    return roles


def _application_key(key: str, value: str, state: State, where: str) -> Outcome:  # noqa: C901  (one branch per NiftyNet key: a table as code)
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
        if as_bool(value, key=where):
            return "mapped", "label values are mapped to 0..K-1 for training and back on output"
        return "approximated", (
            "label values are still mapped to 0..K-1 and back on output; NiftyNet used them "
            "as class indices (the same when they already are 0..K-1)"
        )
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
    if key == "noise_size":
        size = as_int(value, key=where)
        if size <= 0:
            raise ConfigError("expected the generator's noise length > 0")
        return "mapped", state.put("task.noise_size", size) + f" = {size}"
    if key == "inference_type":
        mode = AUTOENCODER_MODES.get(value.strip().strip("'\"").lower())
        if mode is None:
            raise ConfigError(f"expected one of {', '.join(AUTOENCODER_MODES)}")
        return "mapped", state.put("inference.mode", mode) + f" = {mode}"
    if key == "n_interpolations" and state.application == "gan":
        count = as_int(value, key=where)
        if count < 1:
            raise ConfigError("expected at least 1")
        return "approximated", state.put("inference.num_samples", count) + (
            f" = {count}; approximated: random noise samples, where NiftyNet interpolated "
            "between two noise vectors"
        )
    if key == "n_interpolations":
        steps = as_int(value, key=where)
        if steps < 2:
            raise ConfigError("expected at least 2 (both ends are included)")
        return "mapped", state.put("inference.steps", steps) + f" = {steps} (ends included)"
    if key == "noise_stddev":
        sigma = as_number(value, key=where)
        if sigma == 1.0:
            return "mapped", "samples are drawn from N(0, 1)"
        return "approximated", f"samples are drawn from N(0, 1), not N(0, {sigma:g}²)"
    if key == "error_map":
        return "mapped", state.put("inference.error_maps", as_bool(value, key=where)) + (
            f" = {as_bool(value, key=where)}"
        )
    if key == "loss_border":
        if as_int(value, key=where) == 0:
            return "mapped", "the loss covers the whole window"
        return "not supported", "a loss ignoring the window border"
    if key in APPLICATION_KEYS:
        return "not supported", f"{key} has no voxelflow equivalent yet"
    hint = suggest(key, sorted(APPLICATION_KEYS))
    return "unknown", f"{_UNKNOWN}; ignored.{hint}"


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
    if role == "inferred":
        state.extras.setdefault("inferred_folders", {})[name] = folder
        return
    if role is None:
        return  # NiftyNet read no files of a section no role uses
    listed = folder.pop("csv_file", None)
    if listed is None and "paths" not in folder:
        data_file = section.get("csv_data_file", "").strip().strip("'\"")
        if data_file:
            raise ConfigError(
                f"[{name}] csv_data_file = {data_file}: NiftyNet's contrib CSV reader (values "
                "from a CSV) has no voxelflow equivalent; give them as a column of a dataset CSV"
            )
        raise ConfigError(
            f"[{name}] path_to_search: required for the {role} role (or an existing csv_file)"
        )
    paths = folder.pop("paths", [folder["path"]])
    if listed is not None:
        state.extras.setdefault("csv_files", {})[name] = listed
    elif len(paths) > 1:
        state.extras.setdefault("multi_folder", {})[name] = paths
    state.put(f"dataset.folders.{name}", folder)


def _input_key(  # noqa: C901  (one branch per NiftyNet input-section key: a table as code)
    key: str, value: str, name: str, role: str | None, folder: dict[str, Any], state: State
) -> Outcome:
    where = f"[{name}] {key}"
    if key == "path_to_search":
        paths = as_list(value)
        folder["path"] = paths[0] if paths else "."
        folder["paths"] = paths or ["."]
        if len(paths) > 1:
            return (
                "mapped",
                f"all {len(paths)} folders are searched (listed into dataset.csv, as NiftyNet "
                "listed them into <model_dir>/<section>.csv)",
            )
        return (
            "mapped",
            f"dataset.folders.{name}.path = {folder['path']} (relative: working folder)",
        )
    if key in ("filename_contains", "filename_not_contains"):
        target = "contains" if key == "filename_contains" else "not_contains"
        folder[target] = as_list(value)
        return "mapped", f"dataset.folders.{name}.{target} = {folder[target]}"
    if key == "csv_file":
        listed = value.strip().strip("'\"")
        if not listed:
            return "ignored", "empty: the files are found by the folder pattern"
        # NiftyNet: the list is used when it resolves (working folder, then the config's)
        for candidate in (Path(listed).expanduser(), state.config_dir / listed):
            if candidate.is_file():
                folder["csv_file"] = str(candidate)
                return "mapped", f"the files listed in {candidate} (subject,path lines)"
        return "ignored", (
            f"{listed} does not exist: the folder pattern is used (NiftyNet then wrote the list)"
        )
    if key == "filename_removefromid":
        regex = value.strip().strip("'\"")
        if not regex:
            return "ignored", "empty: the id is the name minus the filename_contains strings"
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"not a regular expression: {exc}") from None
        state.extras.setdefault("remove_from_id", {})[name] = regex
        return "mapped", (
            f"subject id = file name with matches of {regex!r} removed (NiftyNet's rule; the "
            "files are listed into dataset.csv)"
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
        if not window:
            return "ignored", "empty: the application's window"
        target = "sampling.label_window" if role in ("label", "target") else "sampling.window"
        if target == "sampling.label_window" and window == state.get("sampling.window"):
            return "mapped", "same as the image window"
        if role in ("inferred", None):
            return "ignored", "window of a section that is not sampled"
        return _shared(target, window, state)
    if key == "loader":
        return "ignored", "readers are chosen by file suffix"
    if key in ("csv_data_file", "to_ohe"):
        if not value.strip().strip("'\"") or value.strip().lower() in ("false", "no", "0"):
            return "ignored", "empty: not used"
        return "not supported", "contrib CSV reader: give values as columns of a dataset CSV"
    known = sorted(TABLE["INPUT"])
    hint = suggest(key, known)
    if not hint and key in {k for t in SYSTEM_SECTIONS.values() for k in t}:
        hint = " It is a key of a system section, not of an input section."
    return (
        "unknown",
        f"not a NiftyNet input-section key (NiftyNet 0.6 refused the file); ignored.{hint}",
    )


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


def _settings(state: State) -> NiftyNetSettings:
    model = Path(state.get("system.run_dir"))
    extras = state.extras
    return NiftyNetSettings(
        application=state.application,
        model_dir=model,
        save_seg_dir=_under(
            model, extras.get("save_seg_dir") or TABLE["INFERENCE"]["save_seg_dir"]
        ),
        save_csv_dir=_under(
            model, extras.get("save_csv_dir") or TABLE["EVALUATION"]["save_csv_dir"]
        ),
        output_postfix=extras.get("output_postfix", TABLE["INFERENCE"]["output_postfix"]),
        dataset_to_infer=extras.get("dataset_to_infer", ""),
        inference_iter=int(extras.get("inference_iter", TABLE["INFERENCE"]["inference_iter"])),
        cuda_devices=extras.get("cuda_devices"),
        inferred_sections=tuple(extras.get("inferred_sections", ())),
        cannot_run=extras.get("cannot_run"),
        starting_iter=int(extras.get("starting_iter", TABLE["TRAINING"]["starting_iter"])),
        inferred_folders=dict(extras.get("inferred_folders", {})),
    )
