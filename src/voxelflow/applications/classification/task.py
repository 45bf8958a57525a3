"""Targets of the classification application: table cells ↔ class indices or standardised values,
and the windows a whole image is seen through at inference.

:class:`TargetEncoding` is the fitted state of a run (JSON via :meth:`TargetEncoding.state`) and
also the picklable ``window_fields`` callable that adds ``"target"`` to every training window.

Example:
    >>> encoding = TargetEncoding("level", "class", classes=("inferior", "superior"))
    >>> encoding.encode("superior", subject="s1")
    1
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from voxelflow.errors import ConfigError, DataError, ShapeError

if TYPE_CHECKING:
    from voxelflow.data.cached import CachedSubject

log = logging.getLogger(__name__)


class ClassificationTask(BaseModel):
    """The ``task`` section of a classification experiment.

    Attributes:
        target_column: table column holding each subject's class name or value.
        kind: ``class`` (names → indices) or ``value`` (a number per subject).
        class_balanced: draw training subjects with probability ∝ 1 / class frequency.
        classes: class names in index order; default: the training split's names, sorted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_column: str
    kind: Literal["class", "value"] = "class"
    class_balanced: bool = False
    classes: list[str] | None = None

    @classmethod
    def from_config(cls, task: Mapping[str, Any]) -> ClassificationTask:
        """Validate ``experiment.task``.

        Raises:
            ConfigError: naming ``task.<key>``, e.g. a missing ``task.target_column``.
        """
        try:
            parsed = cls(**dict(task))
        except ValidationError as exc:
            problems = "; ".join(
                f"task.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                f" (got {error.get('input')!r})"
                for error in exc.errors()
            )
            raise ConfigError(f"classification task options: {problems}") from None
        if parsed.kind == "value" and (parsed.class_balanced or parsed.classes):
            key = "class_balanced" if parsed.class_balanced else "classes"
            raise ConfigError(f"task.{key}: expected only with task.kind 'class', got kind 'value'")
        if parsed.classes is not None and (
            len(set(parsed.classes)) != len(parsed.classes) or len(parsed.classes) < 2
        ):
            raise ConfigError(f"task.classes: expected at least 2 distinct names, got {parsed.classes}")
        return parsed


def target_cell(holder: object, column: str) -> str | None:
    """The stripped text of ``column`` for a table row, cached subject or inference item
    (``columns`` or ``fields``); None when absent or empty."""
    cells = getattr(holder, "columns", None)
    if cells is None:
        cells = getattr(holder, "fields", None) or {}
    value = cells.get(column)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def sort_class_names(names: set[str] | Sequence[str]) -> list[str]:
    """Sorted names: numerically when every name is a number (``2 < 10``), else as text."""
    unique = set(names)
    try:
        return sorted(unique, key=float)
    except ValueError:
        return sorted(unique)


def _missing_targets(rows: Sequence[Any], column: str) -> None:
    """Raise one DataError listing every training row without a target."""
    if rows and not any(column in row.columns for row in rows):
        known = sorted({c for row in rows for c in row.columns})
        raise DataError(
            f"task.target_column: expected a column {column!r} in the dataset table, got columns {known}"
        )
    missing = [row.name for row in rows if target_cell(row, column) is None]
    if missing:
        raise DataError(
            f"task.target_column {column!r}: expected a value for every training subject, "
            f"got none for {len(missing)} subject(s): {missing}"
        )


def fit_class_names(
    rows: Sequence[Any], column: str, *, configured: Sequence[str] | None = None
) -> list[str]:
    """Class names of the training rows (sorted), or the configured list checked against them.

    Raises:
        DataError: a training subject without a target (all listed), fewer than 2 classes, or a
            training class missing from ``task.classes``.
    """
    _missing_targets(rows, column)
    found = {target_cell(row, column) for row in rows}
    if configured is not None:
        unknown = sorted(name for name in found if name is not None and name not in configured)
        if unknown:
            raise DataError(
                f"task.classes: expected every training class among {list(configured)}, "
                f"got {unknown} in column {column!r}"
            )
        return list(configured)
    names = sort_class_names([name for name in found if name is not None])
    if len(names) < 2:
        raise DataError(
            f"task.target_column {column!r}: expected at least 2 classes in the training split, got {names}"
        )
    return names


def fit_value_statistics(rows: Sequence[Any], column: str) -> tuple[float, float]:
    """Mean and standard deviation of the training targets (std 1 when they are all equal).

    Raises:
        DataError: a training subject without a target, or cells that are not numbers (listed).
    """
    _missing_targets(rows, column)
    values, bad = [], []
    for row in rows:
        try:
            values.append(float(target_cell(row, column)))  # type: ignore[arg-type]
        except ValueError:
            bad.append(f"{row.name}={target_cell(row, column)!r}")
    if bad or not all(math.isfinite(v) for v in values):
        raise DataError(
            f"task.target_column {column!r}: expected finite numbers (task.kind 'value'), got {bad}"
        )
    mean, std = float(np.mean(values)), float(np.std(values))
    if std == 0.0:
        log.warning("task.target_column %r: every training value is %g; std set to 1", column, mean)
        std = 1.0
    return mean, std


@dataclass(frozen=True)
class TargetEncoding:
    """Table cell ↔ network target, and the ``window_fields`` callable of training.

    Args:
        column: the target column.
        kind: ``"class"`` or ``"value"``.
        classes: class names in index order (``kind="class"``).
        mean: training mean of the values (``kind="value"``).
        std: training standard deviation of the values.
    """

    column: str
    kind: str
    classes: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TargetEncoding:
        """Rebuild from :meth:`state` (a run's ``preprocessing.json`` ``"task"``).

        Raises:
            ConfigError: a state that is not a classification task state.
        """
        try:
            if state["kind"] == "class":
                return cls(str(state["target_column"]), "class", classes=tuple(state["classes"]))
            return cls(
                str(state["target_column"]),
                "value",
                mean=float(state["mean"]),
                std=float(state["std"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"task state: expected kind, target_column and classes or mean/std, got {state!r}"
            ) from exc

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        if self.kind == "class":
            return {"kind": "class", "target_column": self.column, "classes": list(self.classes)}
        return {"kind": "value", "target_column": self.column, "mean": self.mean, "std": self.std}

    def encode(self, value: object, *, subject: str) -> int:
        """Class index of a class name.

        Raises:
            DataError: naming the subject and the value when the class was not seen in training.
        """
        text = None if value is None else str(value).strip()
        if text not in self.classes:
            raise DataError(
                f"subject {subject!r}: expected a class of column {self.column!r} among the "
                f"training classes {list(self.classes)}, got {text!r}"
            )
        return self.classes.index(text)

    def parse_value(self, value: object, *, subject: str) -> float:
        """The number in a value cell.

        Raises:
            DataError: naming the subject and the cell when it is not a number.
        """
        try:
            return float(str(value).strip())
        except ValueError:
            raise DataError(
                f"subject {subject!r}: expected a number in column {self.column!r}, got {value!r}"
            ) from None

    def standardize(self, value: float) -> float:
        """``(value - mean) / std``."""
        return (value - self.mean) / self.std

    def decode_value(self, standardised: float) -> float:
        """``standardised * std + mean``: back to the column's units."""
        return standardised * self.std + self.mean

    def __call__(self, subject: CachedSubject) -> dict[str, torch.Tensor]:
        """``{"target": class index ()}`` (int64) or ``{"target": standardised value (1,)}``."""
        value = target_cell(subject, self.column)
        if self.kind == "class":
            index = self.encode(value, subject=subject.name)
            return {"target": torch.tensor(index, dtype=torch.int64)}
        number = self.standardize(self.parse_value(value, subject=subject.name))
        return {"target": torch.tensor([number], dtype=torch.float32)}


def image_windows(
    image: torch.Tensor,
    window: Sequence[int],
    *,
    resize: bool,
    overlap: float = 0.5,
    batch_size: int = 4,
    pad_value: float = 0.0,
) -> Iterator[torch.Tensor]:
    """The windows a whole image is classified through, in batches.

    ``resize``: one window, the image resized to ``window`` (as the ``resize`` sampler trains);
    otherwise every window of a regular grid covering the image (MONAI's placement, see
    :func:`voxelflow.sampling.grid.grid_starts`), padded where the window exceeds the image.

    Args:
        image: ``(C, *spatial)``.
        window: window size; ``0``/``-1`` = whole axis.
        resize: resize instead of tiling.
        overlap: fraction of a window shared with its grid neighbour.
        batch_size: windows per yielded batch.
        pad_value: value outside the image.

    Yields:
        ``(N, C, *window)`` float tensors, ``N <= batch_size``.

    Raises:
        ShapeError: the window has another number of axes than the image.
    """
    from voxelflow.sampling.grid import grid_starts
    from voxelflow.sampling.resize import resize_volume
    from voxelflow.sampling.window import read_window, resolve_window

    if image.ndim != len(window) + 1:
        raise ShapeError(
            f"expected an image (C, *spatial) with {len(window)} spatial axes (the window "
            f"{tuple(window)}), got shape {tuple(image.shape)}"
        )
    size = resolve_window(window, tuple(image.shape[1:]))
    if resize:
        yield resize_volume(image.float(), size)[None]
        return
    array = image.float().numpy()
    starts = grid_starts(array.shape[1:], size, overlap)
    for first in range(0, len(starts), max(int(batch_size), 1)):
        chunk = starts[first : first + batch_size]
        yield torch.stack(
            [torch.from_numpy(read_window(array, s, size, pad_value=pad_value)) for s in chunk]
        )
