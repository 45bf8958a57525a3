"""Dataset tables: CSV, folder patterns or an MSD ``dataset.json`` → one row per subject.

Three sources, chosen by the dataset section of the experiment:

* ``csv``: one row per subject, a subject column, one column per modality plus label, target,
  weight or group columns. Relative paths are resolved against the CSV's folder.
* ``folders``: per column a folder, a glob and NiftyNet's ``contains`` / ``not_contains``
  filters. The subject id is the file name minus its suffix minus the ``contains`` strings,
  stripped of separators (or the first group of ``subject_regex``). Columns are outer-joined on
  the subject id; subjects missing a required column are listed.
* ``msd``: a Medical Segmentation Decathlon or nnU-Net v2 folder with ``dataset.json``.

Example:
    >>> rows = load_table(experiment.dataset)  # doctest: +SKIP
    >>> rows[0].name, rows[0].path("image")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelflow.errors import ConfigError, DataError, MissingFileError

if TYPE_CHECKING:  # config is a higher layer: typing only
    from voxelflow.config.schema import DatasetConfig, FolderInput

logger = logging.getLogger(__name__)

#: file suffixes removed from a file name to form a subject id (longest first).
IMAGE_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".mgz",
    ".mgh",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".img",
    ".hdr",
    ".dcm",
    ".png",
    ".tif",
    ".tiff",
    ".jpg",
    ".npy",
    ".npz",
    ".gz",
)
_SEPARATORS = "_-. "


@dataclass(frozen=True)
class SubjectRow:
    """One subject of a dataset table.

    Args:
        name: subject id, unique in the table.
        columns: column → raw value (a file path for image columns, text otherwise).
        base_dir: folder relative paths are resolved against (the CSV's folder).
    """

    name: str
    columns: dict[str, str] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def path(self, column: str) -> Path:
        """The file named in ``column``, resolved against :attr:`base_dir`."""
        value = Path(self.columns[column])
        return value if value.is_absolute() else self.base_dir / value


def required_columns(dataset: DatasetConfig) -> list[str]:
    """Every column named by ``dataset.inputs`` (in order, without duplicates)."""
    return list(dict.fromkeys(c for columns in dataset.inputs.values() for c in columns))


def load_table(
    dataset: DatasetConfig,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    required: Sequence[str] | None = None,
) -> list[SubjectRow]:
    """Build the subject table described by the dataset section.

    Args:
        dataset: the ``dataset`` section (exactly one of ``csv``, ``folders``, ``msd``).
        base_dir: folder relative config paths (CSV, folders, MSD) are resolved against;
            default the working directory.
        required: columns every subject must have; default every column of ``dataset.inputs``
            (pass e.g. ``["image"]`` at inference, when labels may be absent).

    Returns:
        Rows sorted by subject id (CSV rows keep the file order).

    Raises:
        ConfigError: no source or several sources given.
        MissingFileError: the CSV, a folder or ``dataset.json`` does not exist.
        DataError: a missing column, duplicate subject ids, empty required cells, an empty
            folder pattern, or incomplete subjects (with ``incomplete_subjects: error``).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from voxelflow.config.schema import DatasetConfig
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = Path(root, "subjects.csv").write_text("subject,image,label\\ncase01,a.nii,a_seg.nii\\n")
        ...     rows = load_table(DatasetConfig(csv="subjects.csv"), base_dir=root)
        >>> rows[0].name, sorted(rows[0].columns)
        ('case01', ['image', 'label'])
    """
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    needed = list(required) if required is not None else required_columns(dataset)
    sources = [name for name in ("csv", "folders", "msd") if getattr(dataset, name)]
    if len(sources) != 1:
        raise ConfigError(
            f"dataset: expected exactly one of csv, folders, msd, got {sources or 'none'}"
        )
    if dataset.csv is not None:
        return read_csv_table(
            _resolve(root, dataset.csv),
            subject_column=dataset.subject_column,
            required=needed,
            incomplete=dataset.incomplete_subjects,
        )
    if dataset.folders is not None:
        return folder_table(
            dataset.folders, base_dir=root, required=needed, incomplete=dataset.incomplete_subjects
        )
    rows = msd_table(_resolve(root, dataset.msd))
    return _check_required(
        rows, needed, source=f"{dataset.msd}/dataset.json", incomplete=dataset.incomplete_subjects
    )


def _resolve(root: Path, path: str | os.PathLike[str] | None) -> Path:
    path = Path(path or ".").expanduser()
    return path if path.is_absolute() else root / path


# --------------------------------------------------------------------------- CSV
def read_csv_table(
    path: Path,
    *,
    subject_column: str = "subject",
    required: Sequence[str] = (),
    incomplete: str = "error",
) -> list[SubjectRow]:
    """Read a subject CSV (header row, one row per subject).

    Raises:
        MissingFileError: the CSV does not exist.
        DataError: missing subject or required column (listing the columns present), duplicate
            subject ids (with their line numbers), empty required cells (listed; with
            ``incomplete="drop"`` those subjects are dropped with a warning instead).
    """
    if not path.is_file():
        raise MissingFileError(f"dataset CSV not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        header = [h.strip() for h in (reader.fieldnames or [])]
        records = [
            (line, {(k or "").strip(): (v or "").strip() for k, v in rec.items()})
            for line, rec in enumerate(reader, start=2)
        ]
    for column in [subject_column, *required]:
        if column not in header:
            raise DataError(
                f"{path}: expected a column {column!r}, got columns {header}"
                + (" (set dataset.subject_column)" if column == subject_column else "")
            )
    records = [(line, rec) for line, rec in records if any(rec.values())]
    _check_unique_ids([(rec[subject_column], line) for line, rec in records], source=str(path))
    empty = [
        f"line {line} ({rec[subject_column] or '?'}): {column}"
        for line, rec in records
        for column in [subject_column, *required]
        if not rec.get(column)
    ]
    if empty:
        message = (
            f"{path}: expected a value in every required cell, got {len(empty)} empty: "
            + "; ".join(empty[:20])
        )
        if incomplete != "drop" or any(not rec[subject_column] for _, rec in records):
            raise DataError(message + " (dataset.incomplete_subjects: drop skips such subjects)")
        logger.warning("%s; dropping them (dataset.incomplete_subjects: drop)", message)
        records = [(n, rec) for n, rec in records if all(rec.get(c) for c in required)]
    return [
        SubjectRow(
            rec[subject_column], {k: v for k, v in rec.items() if k != subject_column}, path.parent
        )
        for _, rec in records
    ]


def _check_unique_ids(ids_with_lines: Iterable[tuple[str, Any]], *, source: str) -> None:
    seen: dict[str, list[str]] = {}
    for subject, where in ids_with_lines:
        seen.setdefault(subject, []).append(str(where))
    duplicates = {s: w for s, w in seen.items() if len(w) > 1}
    if duplicates:
        listing = "; ".join(f"{s!r} at {', '.join(w)}" for s, w in sorted(duplicates.items()))
        raise DataError(f"{source}: expected unique subject ids, got duplicates: {listing}")


# --------------------------------------------------------------------------- folder patterns
def folder_table(
    folders: dict[str, FolderInput],
    *,
    base_dir: Path,
    required: Sequence[str],
    incomplete: str = "error",
) -> list[SubjectRow]:
    """Match files per column and outer-join the columns on the subject id.

    Raises:
        ConfigError: a required column has no folder pattern.
        DataError: an empty pattern, duplicate ids in a column, or incomplete subjects.
    """
    unknown = [c for c in required if c not in folders]
    if unknown:
        raise ConfigError(
            f"dataset.folders: expected a pattern for each input column {unknown}, "
            f"got patterns for {sorted(folders)}"
        )
    joined: dict[str, dict[str, str]] = {}
    for column, spec in folders.items():
        for subject, file in match_folder(spec, base_dir=base_dir, column=column).items():
            joined.setdefault(subject, {})[column] = str(file)
    rows = [SubjectRow(s, joined[s], base_dir) for s in sorted(joined)]
    return _check_required(rows, required, source="dataset.folders", incomplete=incomplete)


def match_folder(spec: FolderInput, *, base_dir: Path, column: str) -> dict[str, Path]:
    """Files of one folder pattern, keyed by subject id (NiftyNet filename matching).

    Raises:
        MissingFileError: the folder does not exist.
        DataError: nothing matches (naming folder and pattern), or two files give one id.
    """
    folder = _resolve(base_dir, spec.path)
    if not folder.is_dir():
        raise MissingFileError(
            f"dataset.folders.{column}.path: expected an existing folder, got {folder}"
        )
    candidates = sorted(p for p in folder.glob(spec.glob) if not p.name.startswith("."))
    matched = [
        p
        for p in candidates
        if all(s in p.name for s in spec.contains)
        and not any(s in p.name for s in spec.not_contains)
    ]
    if not matched:
        raise DataError(
            f"dataset.folders.{column}: no file in {folder} matches glob {spec.glob!r}"
            f" with contains={spec.contains} not_contains={spec.not_contains}"
            f" ({len(candidates)} file(s) matched the glob before filtering)"
        )
    pairs = [
        (subject_id(p.name, contains=spec.contains, regex=spec.subject_regex, column=column), p)
        for p in matched
    ]
    _check_unique_ids(
        [(s, p.name) for s, p in pairs], source=f"dataset.folders.{column} ({folder})"
    )
    return dict(pairs)


def subject_id(
    file_name: str, *, contains: Sequence[str] = (), regex: str | None = None, column: str = "?"
) -> str:
    """Subject id of a file name.

    With ``regex``, the named group ``subject`` or the first group (or the whole match). Otherwise
    the name minus its image suffix, minus every ``contains`` string, stripped of ``_-. ``.

    Example:
        >>> subject_id("T1_001_img.nii.gz", contains=["T1", "img"])
        '001'

    Raises:
        DataError: the regex does not match, or nothing is left of the name.
    """
    if regex:
        match = re.search(regex, file_name)
        if not match:
            raise DataError(
                f"dataset.folders.{column}.subject_regex {regex!r} does not match {file_name!r}"
            )
        groups = match.groupdict()
        return groups.get("subject") or (match.group(1) if match.groups() else match.group(0))
    stem = strip_suffix(file_name)
    for text in contains:
        stem = stem.replace(text, "_")
    stem = re.sub(r"[_\-. ]{2,}", "_", stem).strip(_SEPARATORS)
    if not stem:
        raise DataError(
            f"dataset.folders.{column}: no subject id left in {file_name!r} after removing "
            f"{list(contains)}; set subject_regex"
        )
    return stem


def strip_suffix(file_name: str) -> str:
    """The file name without its image suffix (``a.nii.gz`` → ``a``)."""
    lower = file_name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _check_required(
    rows: list[SubjectRow], required: Sequence[str], *, source: str, incomplete: str
) -> list[SubjectRow]:
    missing = {c: [r.name for r in rows if not r.columns.get(c)] for c in required}
    missing = {c: names for c, names in missing.items() if names}
    if not missing:
        return rows
    listing = "; ".join(
        f"{c}: {', '.join(names[:20])}" + (" ..." if len(names) > 20 else "")
        for c, names in missing.items()
    )
    present = sorted({c for r in rows for c in r.columns})
    message = (
        f"{source}: subjects missing a required column ({listing}); columns present: {present}"
    )
    if incomplete == "drop":
        logger.warning("%s; dropping them (dataset.incomplete_subjects: drop)", message)
        dropped = {n for names in missing.values() for n in names}
        return [r for r in rows if r.name not in dropped]
    raise DataError(message + " (set dataset.incomplete_subjects: drop to skip them)")


# --------------------------------------------------------------------------- MSD / nnU-Net
def read_dataset_json(folder: Path) -> dict[str, Any]:
    """The parsed ``dataset.json`` of an MSD or nnU-Net folder."""
    import json

    path = folder / "dataset.json"
    if not path.is_file():
        raise MissingFileError(f"dataset.msd: expected {path} to exist")
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def dataset_labels(folder: str | os.PathLike[str]) -> dict[int, str]:
    """Label value → name from ``dataset.json`` (MSD ``{"0": "background"}`` or nnU-Net v2
    ``{"background": 0}``; region lists of v2 keep their first value)."""
    labels = read_dataset_json(Path(folder)).get("labels", {})
    result: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).lstrip("-").isdigit():
            result[int(key)] = str(value)
        else:
            result[int(value[0] if isinstance(value, list) else value)] = str(key)
    return dict(sorted(result.items()))


def msd_table(folder: Path) -> list[SubjectRow]:
    """Rows of an MSD (``training`` list) or nnU-Net v2 (``imagesTr/<case>_<XXXX>``) folder.

    Columns: ``image`` (one file, possibly 4-D multi-modal) or, for nnU-Net v2 with several
    channels, ``image_0000``, ``image_0001`` ... (set ``dataset.inputs.image`` to them), plus
    ``label`` when present.
    """
    info = read_dataset_json(folder)
    if info.get("training"):
        pairs = []
        for entry in info["training"]:
            image = str(entry["image"]) if isinstance(entry, dict) else str(entry)
            columns = {"image": image} | (
                {"label": str(entry["label"])}
                if isinstance(entry, dict) and entry.get("label")
                else {}
            )
            pairs.append((strip_suffix(Path(image).name), columns))
        _check_unique_ids(
            [(n, i) for i, (n, _) in enumerate(pairs)], source=f"{folder}/dataset.json"
        )
        return [SubjectRow(name, columns, folder) for name, columns in pairs]
    return _nnunet_v2_rows(folder, info)


def _nnunet_v2_rows(folder: Path, info: dict[str, Any]) -> list[SubjectRow]:
    ending = info.get("file_ending", ".nii.gz")
    channels = sorted(
        int(k) for k in (info.get("channel_names") or info.get("modality") or {"0": ""})
    )
    images = folder / "imagesTr"
    if not images.is_dir():
        raise DataError(f"{folder}/dataset.json: expected a 'training' list or an imagesTr folder")
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    cases: dict[str, dict[str, str]] = {}
    for path in sorted(images.iterdir()):
        match = pattern.match(path.name)
        if match:
            column = "image" if len(channels) == 1 else f"image_{match['channel']}"
            cases.setdefault(match["case"], {})[column] = f"imagesTr/{path.name}"
    if not cases:
        raise DataError(f"{images}: no file matches <case>_<XXXX>{ending}")
    for case, columns in cases.items():
        label = folder / "labelsTr" / f"{case}{ending}"
        if label.is_file():
            columns["label"] = f"labelsTr/{label.name}"
    return [SubjectRow(case, cases[case], folder) for case in sorted(cases)]


# --------------------------------------------------------------------------- writing
def write_table(
    rows: Sequence[SubjectRow], path: str | os.PathLike[str], *, subject_column: str = "subject"
) -> Path:
    """Write rows as a CSV (atomically); existing relative files are re-based on the CSV folder.

    Reading the file back with :func:`read_csv_table` gives the same subjects and files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in rows for c in row.columns))
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([subject_column, *columns])
        for row in rows:
            writer.writerow([row.name, *(_rebased(row, c, path.parent) for c in columns)])
    os.replace(temp, path)
    return path


def _rebased(row: SubjectRow, column: str, target_dir: Path) -> str:
    value = row.columns.get(column, "")
    if not value or Path(value).is_absolute() or not (row.base_dir / value).exists():
        return value
    return os.path.relpath(os.path.abspath(row.base_dir / value), os.path.abspath(target_dir))


def rows_from_input(
    path: str | os.PathLike[str],
    *,
    image_columns: Sequence[str],
    subject_column: str = "subject",
    pattern: FolderInput | None = None,
) -> list[SubjectRow]:
    """Rows of new data for inference: an image file, a folder of images or a CSV table.

    A file or a folder gives one row per image (subject id: the file name without its suffix)
    in the single image column; several image columns need a CSV table naming them. With
    ``pattern`` (its ``path`` is ignored) a folder is searched like a dataset folder: ``glob``,
    ``contains``/``not_contains`` and the subject-id rule, so label maps beside the images are
    left out and ids match the training table's.

    Raises:
        ConfigError: several image columns but no table. DataError: an empty folder.
    """
    from voxelflow.io.readers import split_suffix

    path = Path(path)
    if pattern is not None and path.is_dir() and len(image_columns) == 1:
        spec = pattern.model_copy(update={"path": path.resolve()})
        found = match_folder(spec, base_dir=path, column=image_columns[0])
        return [SubjectRow(name, {image_columns[0]: str(f.resolve())}) for name, f in sorted(found.items())]
    if path.suffix == ".csv":
        return read_csv_table(path, subject_column=subject_column, required=list(image_columns))
    if len(image_columns) > 1:
        raise ConfigError(
            f"expected a CSV table naming the {len(image_columns)} image columns "
            f"{list(image_columns)}, got {str(path)!r}"
        )
    if not path.exists():
        raise MissingFileError(
            f"expected an image file, a folder or a CSV table, got {str(path)!r}"
        )
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataError(f"expected image files, found none in {str(path)!r}")
    return [SubjectRow(split_suffix(f)[0], {image_columns[0]: str(f.resolve())}) for f in files]


# --------------------------------------------------------------------------- prediction tables
def read_prediction_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] = (),
    require_rows: bool = False,
    hint: str = "",
) -> list[dict[str, str]]:
    """Rows of a prediction table written by inference (``inferred.csv``, ``predictions.csv`` ...).

    The one reader of these tables: evaluation, cross-validation, the NiftyNet commands and the
    demos read them here, so a missing file or column fails with the same error everywhere.

    Args:
        path: the table (header row; a ``subject`` column, one column per output).
        columns: columns every table must have besides ``subject``.
        require_rows: refuse a table with a header only.
        hint: appended to the missing-column message (which run writes such a table).

    Returns:
        One ``column → cell`` dict per row, cells as written (paths are not resolved).

    Raises:
        MissingFileError: the file does not exist (named).
        DataError: a missing column (the file, the columns expected and found), or no rows
            with ``require_rows``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     table = Path(root, "inferred.csv")
        ...     _ = table.write_text("subject,prediction\\ncase01,case01_seg.nii.gz\\n")
        ...     read_prediction_table(table, columns=["prediction"])[0]["prediction"]
        'case01_seg.nii.gz'
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"expected the prediction table {str(path)!r} from inference, found none")
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows, header = list(reader), list(reader.fieldnames or [])
    needed = list(dict.fromkeys(["subject", *columns]))
    missing = [column for column in needed if column not in header]
    if missing:
        raise DataError(
            f"{str(path)!r}: expected columns {_listed(needed)}, got {header} "
            f"(missing {_listed(missing)}){hint}"
        )
    if require_rows and not rows:
        raise DataError(f"{str(path)!r}: expected at least one row of predictions, got none")
    return rows


def prediction_files(path: str | os.PathLike[str], column: str = "prediction") -> dict[str, Path]:
    """Subject → the file named in ``column`` of a prediction table (as written, not resolved).

    Raises:
        MissingFileError, DataError: see :func:`read_prediction_table`.
    """
    rows = read_prediction_table(path, columns=[column])
    return {row["subject"]: Path(row[column]) for row in rows}


def _listed(names: Sequence[str]) -> str:
    """``'a', 'b' and 'c'``."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
