"""Label remapping: arbitrary label values (e.g. 0, 2, 4, 255) ↔ class indices 0..K-1.

The values are either given (``preprocessing.label_values``) or found from the training labels
with :meth:`LabelMapping.fit`; the mapping is saved in the fitted state and inverted when writing
predictions, so outputs carry the dataset's own values.

Example:
    >>> mapping = LabelMapping([0, 2, 4, 255])
    >>> mapping.to_classes(np.array([0, 255, 4])).tolist()
    [0, 3, 2]
    >>> mapping.to_values(np.array([0, 3, 2])).tolist()
    [0, 255, 4]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.errors import DataError


class LabelMapping:
    """A bijection between sorted label values and class indices.

    Args:
        values: label values in class order (class ``i`` is ``values[i]``); must be unique.

    Raises:
        DataError: when values repeat.
    """

    def __init__(self, values: Sequence[int]) -> None:
        values = [int(v) for v in values]
        if len(set(values)) != len(values):
            raise DataError(f"expected unique label values, got {values}")
        self.values = values

    @classmethod
    def fit(cls, labels: Iterable[np.ndarray]) -> LabelMapping:
        """Collect the sorted unique values over label arrays (the training labels).

        Raises:
            DataError: when a label array holds non-integer values.
        """
        found: set[int] = set()
        for label in labels:
            array = np.asarray(label)
            unique = np.unique(array)
            if not np.all(np.equal(np.mod(unique, 1), 0)):
                raise DataError(f"expected integer label values, got {unique[:10].tolist()}")
            found.update(int(v) for v in unique)
        return cls(sorted(found))

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.values)

    @property
    def is_identity(self) -> bool:
        """True when values are already ``0..K-1``."""
        return self.values == list(range(len(self.values)))

    def to_classes(self, label: np.ndarray, *, path: str | Path | None = None) -> np.ndarray:
        """Map label values to class indices (int64).

        Args:
            label: array of label values, any shape.
            path: file the label came from, named in errors.

        Raises:
            DataError: a value not in :attr:`values`, naming the file and the value.
        """
        array = np.asarray(label)
        values = np.asarray(self.values, dtype=np.float64)
        order = np.argsort(values)
        sorted_values = values[order]
        position = np.clip(np.searchsorted(sorted_values, array), 0, len(values) - 1)
        known = sorted_values[position] == array
        if not np.all(known):
            unknown = np.unique(array[~known])
            where = f" in {str(path)!r}" if path else ""
            raise DataError(
                f"unknown label value {unknown[0]:g}{where} ({int((~known).sum())} voxels): "
                f"expected one of {self.values}; set preprocessing.label_values or refit"
            )
        return order[position].astype(np.int64)

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """Map class indices back to label values (int64).

        Raises:
            DataError: a class index outside ``0..K-1``.
        """
        array = np.asarray(classes).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() >= self.num_classes):
            raise DataError(
                f"expected class indices in 0..{self.num_classes - 1}, got {array.min()}..{array.max()}"
            )
        return np.asarray(self.values, dtype=np.int64)[array]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {"values": list(self.values)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabelMapping:
        """Rebuild from :meth:`state_dict`."""
        return cls(state["values"])

    def __repr__(self) -> str:
        return f"LabelMapping({self.values})"
