"""Segmentation's task options and fitted task state.

Segmentation takes no ``task:`` options; what it learns from the training split is the label
value of each class (``label_values``, fitted by preprocessing and saved with checkpoints), and
what cross-validation decides for a run is its postprocessing (``<run>/cv/postprocessing.json``,
written by :func:`voxelflow.cv.postprocess.decide_postprocessing`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelflow.errors import ConfigError, DataError

#: cross-validation's postprocessing decision, inside ``<run>/cv/``.
DECISION_FILE = "postprocessing.json"


@dataclass(frozen=True)
class SegmentationTask:
    """The classes a segmentation predicts.

    Attributes:
        num_classes: classes including background.
        label_values: label value of each class index (``(0, 1, 2)`` unless the split had others).
    """

    num_classes: int
    label_values: tuple[int, ...]

    @classmethod
    def from_config(
        cls,
        task: Mapping[str, Any],
        *,
        num_classes: int | None,
        label_values: Sequence[int] | None = None,
    ) -> SegmentationTask:
        """The task of an experiment's ``task:`` section, ``num_classes`` and the fitted labels.

        Raises:
            ConfigError: any ``task`` option (segmentation takes none), or no class count from
                either ``num_classes`` or the label values.
        """
        if task:
            raise ConfigError(
                f"task.{next(iter(task))}: segmentation takes no task options, got {sorted(task)}"
            )
        count = num_classes or (len(label_values) if label_values is not None else None)
        if count is None:
            raise ConfigError(
                "num_classes: expected a value or label values from the training split, got neither"
            )
        values = tuple(int(v) for v in label_values) if label_values is not None else tuple(range(count))
        return cls(num_classes=count, label_values=values)


def read_decision(run_dir: Path) -> dict[str, Any] | None:
    """The postprocessing decided by cross-validation for ``run_dir`` (its ``cv/`` file), or None.

    Raises:
        DataError: the file exists but is not a JSON object (naming the file).
    """
    path = Path(run_dir) / "cv" / DECISION_FILE
    if not path.is_file():
        return None
    try:
        decision = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(path)!r}: expected a JSON postprocessing decision, got {exc}") from None
    if not isinstance(decision, dict):
        raise DataError(f"{str(path)!r}: expected a JSON object, got {type(decision).__name__}")
    return decision
