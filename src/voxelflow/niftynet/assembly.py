"""The last step of a NiftyNet conversion, once every key is read (used by :mod:`.niftynet`).

Keys that only mean something together are combined here: histogram standardisation with
normalisation, decay with reg_type, scaling with isotropic_scaling, border with the inference
window; NiftyNet's path rules (model_dir, files inside it, several path_to_search folders and
csv_file lists written into one dataset table); NiftyNet's 2-D windows; the refusals that need
the whole file (no network name, no loss, no GAN noise size).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from voxelflow.errors import ConfigError
from voxelflow.niftynet.defaults import NIFTYNET_DEFAULTS as TABLE
from voxelflow.niftynet.keys import ConversionNote, State

__all__ = ["L1_OPTIMIZER", "SLICE_PLUGIN", "finish", "under"]

#: niftynet_slices.PLUGIN, named here so that converting never imports torch
SLICE_PLUGIN = "voxelflow.niftynet.slices:single_slice"


def finish(state: State, notes: list[ConversionNote]) -> None:
    """Combine, default and check what the keys set; rewrite notes that depended on others.

    Raises:
        ConfigError: no network name, no loss for a non-segmentation application, no GAN
            noise size, or a path_to_search matching nothing in any folder.
    """
    state.data.setdefault("dataset", {}).setdefault("inputs", {"image": ["image"]})
    _default_loss(state)
    _normalisation(state, notes)
    _regularisation(state)
    _augmentation(state)
    if state.save_every_zero:
        state.put(
            "training.checkpoint_every", max(int(state.get("training.max_iterations", 1000)), 1)
        )
    if state.border is not None:
        _border_to_overlap(state, notes)
    _paths(state)
    _same_size_label_window(state)
    _two_d_windows(state)
    for section, key, status, detail in state.notes_later:
        for index, note in enumerate(notes):
            if (note.section, note.key) == (section, key):
                notes[index] = ConversionNote(section, key, note.value, status, detail)
    if state.application == "gan" and state.get("task.noise_size") is None:
        raise ConfigError("[GAN] noise_size: required (NiftyNet's default -1 is no noise length)")
    if state.get("network.name") is None:
        raise ConfigError("[NETWORK] name: required; NiftyNet has no default network")


def _same_size_label_window(state: State) -> None:
    """NiftyNet's U-Nets used valid convolutions, so their label windows were smaller than the
    image windows; voxelflow's U-Net keeps the size, so labels are sampled at the image window."""
    label_window = state.get("sampling.label_window")
    if label_window is None or state.get("network.name") != "unet":
        return
    state.data["sampling"].pop("label_window")
    for section, role in state.extras.get("roles", {}).items():
        if role == "label":
            state.notes_later.append(
                (
                    section,
                    "spatial_window_size",
                    "approximated",
                    f"labels use the image window {state.get('sampling.window')}: voxelflow's "
                    f"U-Net output has the input's size (NiftyNet's valid convolutions gave "
                    f"{label_window})",
                )
            )


def _two_d_windows(state: State) -> None:
    """NiftyNet's ``(h, w, 1)`` windows mean a 2-D network, in every application. voxelflow's
    segmentation builds one itself (slice windows); the others get theirs wrapped."""
    window = state.get("sampling.window") or state.get("inference.window") or []
    if state.application == "segmentation" or len(window) != 3 or window[2] != 1:
        return
    network = dict(state.get("network", {}))
    state.put("network", {"name": SLICE_PLUGIN, "network": network})
    if state.application == "gan":
        discriminator = state.get("task.discriminator") or {"name": "discriminator"}
        state.put("task.discriminator", {"name": SLICE_PLUGIN, "network": discriminator})
    state.notes_later.append(
        (
            "NETWORK",
            "name",
            "mapped",
            f"network.name = {network.get('name')} as a 2-D network on (h, w, 1) slices "
            "(NiftyNet's 2-D windows), wrapped by voxelflow.niftynet.slices",
        )
    )


def _default_loss(state: State) -> None:
    if "loss" in state.data:
        return
    if state.application != "segmentation":
        # NiftyNet's default loss_type Dice is a segmentation loss: its other applications
        # refused a file without loss_type
        raise ConfigError(
            f"[TRAINING] loss_type: required for {state.application}; NiftyNet's default "
            "Dice is a segmentation loss"
        )
    state.put("loss", {"name": "dice", "squared": True})  # NiftyNet's default loss_type Dice


def _normalisation(state: State, notes: list[ConversionNote]) -> None:
    """Histogram standardisation (only with normalisation = True) then whitening, as NiftyNet."""
    mask: dict[str, Any] = {}
    if state.mask.get("enabled"):  # NiftyNet's defaults: otsu_plus foreground, "and" combined
        mask = {"mask": "otsu", **{k: v for k, v in state.mask.items() if k != "enabled"}}
    chain = []
    if "histogram_standardization" in state.normalizers:
        options = {"landmarks": "percentile", "cutoff": [1.0, 99.0], **state.histogram}
        chain.append({"name": "histogram_standardization", **options, **mask})
    if "zscore" in state.normalizers:
        chain.append({"name": "zscore", **mask})
    state.put("preprocessing.normalization", chain)
    if "histogram_standardization" not in state.normalizers:
        for index, note in enumerate(notes):
            if note.section == "NETWORK" and note.key in (
                "norm_type",
                "cutoff",
                "histogram_ref_file",
            ):
                notes[index] = ConversionNote(
                    note.section,
                    note.key,
                    note.value,
                    "ignored",
                    "normalisation is off: NiftyNet used it only with normalisation = True",
                )


def _regularisation(state: State) -> None:
    amount = float(state.regulariser.get("decay", 0.0))
    if amount <= 0:
        return
    if state.regulariser.get("type", "L2") == "L2":
        # tf l2_regularizer(decay) adds decay·Σw²/2 to the loss: its gradient decay·w is
        # exactly the coupled weight_decay of torch's Adam and SGD
        state.put("optimizer.weight_decay", amount)
        return
    base = dict(state.data.get("optimizer", {}))
    name = base.pop("name", "adam")
    state.put("optimizer", {"name": L1_OPTIMIZER, "base": name, "l1": amount, **base})


#: the optimiser plugin adding NiftyNet's L1 penalty gradient (see niftynet_optim.py)
L1_OPTIMIZER = "voxelflow.niftynet.optim:l1_regularised"


def _augmentation(state: State) -> None:
    augmentation = []
    if "flip" in state.augment:
        augmentation.append({"name": "flip", **state.augment["flip"]})
    affine = dict(state.augment.get("affine", {}))
    per_axis = affine.pop("rotation_per_axis", None)
    if per_axis is not None and "rotation" not in affine:
        affine["rotation"] = per_axis
    if "scaling" not in affine:
        affine.pop("isotropic", None)  # isotropic_scaling alone changes nothing
    if affine:
        augmentation.append({"name": "affine", **affine})
    if "elastic" in state.augment:
        augmentation.append({"name": "elastic", **state.augment.get("elastic_options", {})})
    if augmentation:
        state.put("augmentation", augmentation)


def _paths(state: State) -> None:
    """NiftyNet's path rules: model_dir against the working folder (default
    ``<config folder>/model``); split file, outputs and evaluation folder against model_dir."""
    model = Path(state.extras.get("model_dir") or state.config_dir / "model")
    state.put("system.run_dir", str(model))
    split = under(
        model, state.extras.get("dataset_split_file", TABLE["SYSTEM"]["dataset_split_file"])
    )
    if split.is_file():
        state.put("split.file", str(split))
    reference = state.extras.get("histogram_ref_file")
    if reference and "histogram_standardization" in state.normalizers:
        landmarks = under(model, reference)
        if landmarks.is_file():  # NiftyNet reused an existing landmark file
            state.notes_later.append(
                (
                    "NETWORK",
                    "histogram_ref_file",
                    "approximated",
                    f"{landmarks} exists: NiftyNet reused its landmarks, voxelflow fits them "
                    "again on the training split",
                )
            )
    multi = state.extras.get("multi_folder") or {}
    listed = state.extras.get("csv_files") or {}
    remove = state.extras.get("remove_from_id") or {}
    folders = state.get("dataset.folders") or {}
    searched = [p for paths in multi.values() for p in paths] + [
        folders[name]["path"] for name in remove if name in folders and name not in multi
    ]
    folders_exist = all(Path(p).expanduser().is_dir() for p in searched)
    classes = state.application == "classification" and bool(state.get("dataset.inputs.label"))
    if classes:
        label_folders = [
            folders[c]["path"] for c in state.get("dataset.inputs.label") if c in folders
        ]
        folders_exist = folders_exist and all(Path(p).expanduser().is_dir() for p in label_folders)
    if listed or ((multi or remove or classes) and folders_exist):
        _list_folders_into_csv(state, model)
    if classes and folders_exist:
        _label_images_to_classes(state)
    elif classes:
        state.notes_later.append(
            (
                state.application.upper(),
                "label",
                "approximated",
                "the label folder is not here: voxelflow's classification needs each image's "
                "class in a table column (the net_* commands read them from the label images)",
            )
        )
    for name, regex in remove.items():
        if not folders_exist and name in folders:
            state.notes_later.append(
                (
                    name,
                    "filename_removefromid",
                    "approximated",
                    f"the folder does not exist here: ids are the names minus filename_contains "
                    f"(the net_* commands remove {regex!r} when it exists)",
                )
            )
    if multi and not folders_exist:
        state.notes_later.append(
            (
                next(iter(multi)),
                "path_to_search",
                "approximated",
                "not every folder exists here: only the first is searched (the net_* commands "
                "search all when they exist)",
            )
        )


def under(model_dir: Path, path: str) -> Path:
    """``path`` inside ``model_dir`` unless absolute (NiftyNet's to_absolute_path)."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else model_dir / given


def _list_folders_into_csv(state: State, model_dir: Path) -> None:
    """Sections searching several folders: every folder is searched (NiftyNet's rule), the
    files found are written to one table ``<model_dir>/niftynet_subjects.csv``."""
    from voxelflow.config.schema import FolderInput
    from voxelflow.errors import DataError, VoxelflowError
    from voxelflow.io.table import match_folder

    folders: dict[str, Any] = state.data["dataset"].pop("folders")
    multi: dict[str, list[str]] = state.extras.get("multi_folder") or {}
    remove: dict[str, str] = state.extras.get("remove_from_id") or {}
    listed: dict[str, str] = state.extras.get("csv_files") or {}
    joined: dict[str, dict[str, str]] = {}
    for column, spec in folders.items():
        if column in listed:
            for subject, file in _read_file_list(Path(listed[column]), column).items():
                joined.setdefault(subject, {})[column] = file
            continue
        paths = multi.get(column, [spec["path"]])
        found: dict[str, Path] = {}
        for path in paths:
            pattern = FolderInput(**{**spec, "path": path})
            try:
                found.update(match_folder(pattern, base_dir=Path.cwd(), column=column))
            except DataError as exc:
                if "matches" not in str(exc):  # NiftyNet failed only when no folder matched
                    raise ConfigError(f"[{column}] path_to_search = {path}: {exc}") from None
            except VoxelflowError as exc:
                raise ConfigError(f"[{column}] path_to_search = {path}: {exc}") from None
        if column in remove:  # NiftyNet: the id is the name with the regex's matches removed
            from voxelflow.io.readers import split_suffix

            found = {re.sub(remove[column], "", split_suffix(f)[0]): f for f in found.values()}
        if not found:
            raise ConfigError(
                f"[{column}] path_to_search = {', '.join(paths)}: no file matches "
                f"filename_contains {spec.get('contains', [])} in any folder"
            )
        for subject, found_file in found.items():
            joined.setdefault(subject, {})[column] = str(found_file.resolve())
    table = model_dir / "niftynet_subjects.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", *folders], restval="")
        writer.writeheader()
        writer.writerows({"subject": s, **joined[s]} for s in sorted(joined))
    state.put("dataset.csv", str(table))


def _label_images_to_classes(state: State) -> None:
    """NiftyNet's classification read each subject's class from a label image; voxelflow's reads
    it from a table column (``task.target_column``): the values are written into the table."""
    from voxelflow.io.readers import read_image

    table = Path(state.get("dataset.csv"))
    (column,) = state.get("dataset.inputs.label")[:1]
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if not row.get(column):
            continue
        values = read_image(row[column], kind="label").data.unique().tolist()
        if len(values) != 1:
            raise ConfigError(
                f"[{column}] {row[column]}: expected one class value per label image "
                f"(NiftyNet's classification labels), got {values[:5]}"
            )
        row[column] = str(int(values[0]))
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["subject"])
        writer.writeheader()
        writer.writerows(rows)
    state.data["dataset"]["inputs"].pop("label")
    state.put("task.target_column", column)
    state.notes_later.append(
        (
            state.application.upper(),
            "label",
            "mapped",
            f"each label image's class value is written to column {column!r} of "
            f"{table.name}; task.target_column = {column}",
        )
    )


def _read_file_list(path: Path, section: str) -> dict[str, str]:
    """NiftyNet's per-section ``csv_file``: ``subject_id,path`` lines (no header).

    Raises:
        ConfigError: a line without two columns.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [line for line in csv.reader(handle) if line]
    bad = [number for number, line in enumerate(lines, 1) if len(line) < 2]
    if bad:
        raise ConfigError(f"[{section}] csv_file = {path}: line {bad[0]}: expected subject,path")
    base = path.parent
    return {
        line[0].strip(): str(
            Path(line[1].strip())
            if Path(line[1].strip()).is_absolute() or Path(line[1].strip()).exists()
            else base / line[1].strip()
        )
        for line in lines
    }


def _border_to_overlap(state: State, notes: list[ConversionNote]) -> None:
    window = state.get("inference.window") or state.get("sampling.window") or [64, 64, 64]
    fractions = [2 * b / w for b, w in zip(state.border or [], window) if w > 0]
    overlap = min(max(fractions, default=0.0), 0.9)
    if overlap > 0:
        state.put("inference.overlap", round(overlap, 4))
        state.put("inference.blend", "crop")
    for index, note in enumerate(notes):
        if (note.section.upper(), note.key) == ("INFERENCE", "border"):
            detail = (
                f"inference.overlap = {overlap:.4g} (2·{state.border}/{window}), "
                "inference.blend = crop"
            )
            notes[index] = ConversionNote(
                note.section, note.key, note.value, "approximated", detail
            )
