"""Helpers shared by several applications (one copy, imported by each application package)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from voxelflow.errors import DataError

if TYPE_CHECKING:
    from voxelflow.io.image import Image


def pair_cases(
    predictions: Mapping[str, Image], references: Mapping[str, Image]
) -> dict[str, tuple[Image, Image]]:
    """Subject → (prediction, reference), sorted by subject (the API's in-memory evaluations).

    Raises:
        DataError: a prediction without reference or the reverse (both lists named).
    """
    missing = sorted(set(predictions) - set(references))
    unused = sorted(set(references) - set(predictions))
    if missing or unused:
        raise DataError(
            f"expected a reference for every prediction and the reverse; "
            f"no reference for {missing or 'none'}, no prediction for {unused or 'none'}"
        )
    return {name: (predictions[name], references[name]) for name in sorted(predictions)}
