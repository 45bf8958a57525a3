"""Train / validation / test splits and k-fold cross-validation, drawn once and reused.

:func:`make_split` draws a seeded split of the subjects (optionally grouped, so that no patient
is in two splits, and stratified, so that each split keeps a column's class ratios), writes it to
a CSV (``subject,split,fold,group``) and **reads that file back on every later call**: a split is
never silently re-drawn. When the subjects changed since the file was written, new subjects are
an error (they would otherwise go nowhere) and removed subjects a warning. A user-given
``split.file`` wins over everything; its ``split`` column takes ``train``/``validation``/``test``
(NiftyNet's ``training``/``inference`` are accepted) or ``exclude`` to leave a subject out.

Example:
    >>> split = make_split(rows, experiment.split, path=run_dir / "split.csv")  # doctest: +SKIP
    >>> split["validation"]  # doctest: +SKIP
    ['s03', 's07']
"""

from __future__ import annotations

import csv
import logging
import os
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from voxelflow.errors import ConfigError, DataError, MissingFileError
from voxelflow.io.table import SubjectRow

if TYPE_CHECKING:  # config is a higher layer: typing only
    from voxelflow.config.schema import SplitConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_SYNONYMS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
    "inference": "test",
    "exclude": "exclude",
    "excluded": "exclude",
    "none": "exclude",
}


@dataclass(frozen=True)
class _Unit:
    """Subjects that must stay together (one group), with their stratum."""

    group: str
    subjects: tuple[str, ...]
    stratum: str


def make_split(
    rows: Sequence[SubjectRow], config: SplitConfig, *, path: str | os.PathLike[str]
) -> dict[str, list[str]]:
    """The split of ``rows``: read from ``config.file`` or ``path`` if present, else drawn and saved.

    Args:
        rows: the dataset table.
        config: the ``split`` section (fractions or ``folds``/``fold``, group and stratify
            columns, seed, optional user file).
        path: where the drawn split is saved (and read back on later calls).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}`` subject ids in table order.

    Raises:
        DataError: subjects missing from a saved split, a group in two splits, a missing group or
            stratify value, an unknown split name in the file.
        ConfigError: ``fold`` out of range, or a saved split drawn with other folds.
    """
    if config.folds is not None and config.fold >= config.folds:
        raise ConfigError(f"split.fold: expected 0..{config.folds - 1}, got {config.fold}")
    names = [row.name for row in rows]
    if config.file is not None:
        source = Path(config.file)
        if not source.is_file():
            raise MissingFileError(f"split.file: expected an existing CSV, got {source}")
        assignment = read_split(source, config)
    elif Path(path).is_file():
        logger.info("reusing the saved split %s", path)
        assignment = read_split(Path(path), config)
        source = Path(path)
    else:
        assignment = draw_split(rows, config)
        write_split(assignment, rows, config, Path(path))
        source = Path(path)
    result = _reconcile(names, assignment, source)
    if config.group_column:
        check_groups(rows, result, column=config.group_column)
    return result


# --------------------------------------------------------------------------- drawing
def draw_split(
    rows: Sequence[SubjectRow], config: SplitConfig
) -> dict[str, tuple[str, int | None]]:
    """Draw subject → (split, fold) without reading or writing files (fold None without k-fold)."""
    units = _units(rows, config)
    rng = random.Random(config.seed)
    if config.folds is None:
        train = 1.0 - config.validation - config.test
        if train <= 0:
            raise ConfigError(
                f"split: expected validation + test < 1, got {config.validation} + {config.test}"
            )
        bins = _assign(
            units, {"train": train, "validation": config.validation, "test": config.test}, rng
        )
        return {s: (b, None) for b, subjects in bins.items() for s in subjects}
    targets = {"test": config.test} | {
        f"fold{k}": (1 - config.test) / config.folds for k in range(config.folds)
    }
    bins = _assign(units, targets, rng)
    result: dict[str, tuple[str, int | None]] = {s: ("test", None) for s in bins.pop("test")}
    for name, subjects in bins.items():
        fold = int(name.removeprefix("fold"))
        split = "validation" if fold == config.fold else "train"
        result.update({s: (split, fold) for s in subjects})
    return result


def _units(rows: Sequence[SubjectRow], config: SplitConfig) -> list[_Unit]:
    groups: dict[str, list[SubjectRow]] = {}
    for row in rows:
        key = (
            _value(row, config.group_column, "split.group_column")
            if config.group_column
            else row.name
        )
        groups.setdefault(key, []).append(row)
    units = []
    for group, members in groups.items():
        strata = (
            [_value(r, config.stratify_column, "split.stratify_column") for r in members]
            if config.stratify_column
            else [""]
        )
        units.append(
            _Unit(group, tuple(r.name for r in members), Counter(strata).most_common(1)[0][0])
        )
    return units


def _value(row: SubjectRow, column: str | None, key: str) -> str:
    value = row.columns.get(column or "", "")
    if not value:
        raise DataError(
            f"{key}: subject {row.name!r} has no value in column {column!r} "
            f"(columns: {sorted(row.columns)})"
        )
    return value


def _assign(
    units: list[_Unit], fractions: dict[str, float], rng: random.Random
) -> dict[str, list[str]]:
    """Greedy seeded assignment: each unit goes to the bin furthest below its target, per stratum."""
    bins: dict[str, list[str]] = {name: [] for name in fractions}
    total = sum(len(u.subjects) for u in units)
    for stratum in sorted({u.stratum for u in units}):
        members = [u for u in units if u.stratum == stratum]
        rng.shuffle(members)
        members.sort(key=lambda u: -len(u.subjects))  # big groups first, ties stay shuffled
        size = sum(len(u.subjects) for u in members)
        counts = dict.fromkeys(fractions, 0)

        def shortfall(n: str, c: dict[str, int] = counts, s: int = size) -> tuple[float, float]:
            return fractions[n] * s - c[n], fractions[n] * total - len(bins[n])

        for unit in members:
            best = max((n for n in fractions if fractions[n] > 0), key=shortfall)
            counts[best] += len(unit.subjects)
            bins[best].extend(unit.subjects)
    for name, subjects in bins.items():
        if fractions[name] > 0 and not subjects:
            logger.warning(
                "split: %s is empty (%d subjects, fraction %.2f)", name, total, fractions[name]
            )
    return bins


# --------------------------------------------------------------------------- files
def write_split(
    assignment: dict[str, tuple[str, int | None]],
    rows: Sequence[SubjectRow],
    config: SplitConfig,
    path: Path,
) -> Path:
    """Write ``subject,split,fold,group`` atomically (in table order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["subject", "split", "fold", "group"])
        for row in rows:
            split, fold = assignment[row.name]
            group = row.columns.get(config.group_column, "") if config.group_column else ""
            writer.writerow([row.name, split, "" if fold is None else fold, group])
    os.replace(temp, path)
    logger.info("wrote the split to %s", path)
    return path


def read_split(path: Path, config: SplitConfig) -> dict[str, tuple[str, int | None]]:
    """Read a split CSV; with a ``fold`` column the validation fold is ``config.fold``.

    Raises:
        DataError: missing columns, unknown split names, duplicate subjects.
        ConfigError: the file's folds do not match ``config.folds``.
    """
    records = _split_records(path)
    folds = sorted({int(r["fold"]) for _, r in records if (r.get("fold") or "").strip()})
    if folds and config.folds != len(folds):
        raise ConfigError(
            f"{path}: the saved split has {len(folds)} folds, expected split.folds = "
            f"{config.folds}; delete the file to draw a new split"
        )
    if config.folds is not None and not folds:
        raise ConfigError(
            f"{path}: the saved split has no folds, expected {config.folds}; "
            "delete the file to draw a new split"
        )
    assignment: dict[str, tuple[str, int | None]] = {}
    for line, record in records:
        subject, raw = record["subject"].strip(), record["split"].strip().lower()
        if raw not in _SYNONYMS:
            raise DataError(
                f"{path} line {line}: expected a split in {sorted(set(_SYNONYMS))}, got {raw!r}"
            )
        if subject in assignment:
            raise DataError(f"{path} line {line}: subject {subject!r} appears twice")
        fold_text = (record.get("fold") or "").strip()
        fold = int(fold_text) if fold_text else None
        split = _SYNONYMS[raw]
        if fold is not None and split != "test":
            split = "validation" if fold == config.fold else "train"
        assignment[subject] = (split, fold)
    return assignment


def _split_records(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line, record) pairs; a header-less two-column file is NiftyNet's ``subject_id,phase``."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        lines = [row for row in csv.reader(stream)]
    header = [h.strip() for h in lines[0]] if lines else []
    if "subject" in header and "split" in header:
        return [(n, dict(zip(header, row))) for n, row in enumerate(lines[1:], start=2) if any(row)]
    niftynet = all(
        len(row) == 2 and row[1].strip().lower() in _SYNONYMS for row in lines if any(row)
    )
    if lines and niftynet:
        return [
            (n, {"subject": row[0], "split": row[1]})
            for n, row in enumerate(lines, start=1)
            if any(row)
        ]
    raise DataError(
        f"{path}: expected columns 'subject' and 'split' (or NiftyNet's subject_id,phase), got {header}"
    )


def _reconcile(
    names: list[str], assignment: dict[str, tuple[str, int | None]], source: Path
) -> dict[str, list[str]]:
    new = [n for n in names if n not in assignment]
    if new:
        raise DataError(
            f"{source}: {len(new)} subject(s) of the table are not in the saved split: "
            f"{', '.join(new[:20])}{' ...' if len(new) > 20 else ''}. Add them to the file "
            "(split 'exclude' leaves one out) or delete the file to draw a new split"
        )
    removed = sorted(set(assignment) - set(names))
    if removed:
        logger.warning(
            "%s: %d subject(s) of the split are no longer in the table and are skipped: %s",
            source,
            len(removed),
            ", ".join(removed[:20]),
        )
    result: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in names:
        split = assignment[name][0]
        if split != "exclude":
            result[split].append(name)
    return result


def check_groups(rows: Sequence[SubjectRow], split: dict[str, list[str]], *, column: str) -> None:
    """Raise when a value of ``column`` (a patient id) occurs in two splits.

    Raises:
        DataError: naming each shared group and the splits it is in.
    """
    group_of = {row.name: row.columns.get(column, "") for row in rows}
    where: dict[str, set[str]] = {}
    for name, subjects in split.items():
        for subject in subjects:
            where.setdefault(group_of.get(subject, ""), set()).add(name)
    shared = {g: sorted(s) for g, s in where.items() if g and len(s) > 1}
    if shared:
        listing = "; ".join(f"{g!r} in {', '.join(s)}" for g, s in sorted(shared.items()))
        raise DataError(f"split: expected each {column!r} in one split only, got {listing}")
