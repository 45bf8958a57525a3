"""The evaluation table of the Python API: predictions against references, one row per case."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from voxelflow.api.inputs import as_images, is_path
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.api.inputs import EvaluationInput
    from voxelflow.config.schema import ExperimentConfig

__all__ = ["evaluation_table"]


def evaluation_table(
    config: ExperimentConfig,
    predictions: EvaluationInput,
    references: EvaluationInput,
    *,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    tolerance_mm: float | None = None,
    out_dir: str | os.PathLike | None = None,
    as_dataframe: bool = False,
) -> Any:
    """Score predictions against references (what :meth:`voxelflow.Experiment.evaluate` runs).

    Args:
        config: the experiment's config; ``labels``, ``metrics`` and ``tolerance_mm`` default to
            its ``evaluation`` section; its application's ``evaluation_table`` scores (through
            the application registry, so a plugin application's own evaluation runs).
        predictions: Predictions, a ``{subject: Image}`` mapping, or a folder of files.
        references: Subjects holding the reference role, a mapping, or a folder of files.
        labels: label values (segmentation). metrics: metric names (segmentation).
        tolerance_mm: NSD tolerance. out_dir: also write the CSVs and the report there.
        as_dataframe: return a pandas DataFrame instead of a list of dicts.

    Returns:
        one row per subject (and label, for segmentation): ``subject``, ``label``, metrics.

    Raises:
        ConfigError: an application without evaluation; pandas missing for ``as_dataframe``.
        DataError: unmatched subjects or a failed case. GeometryError: grids differ.
    """
    from pathlib import Path

    from voxelflow.applications.base import EvaluationOptions
    from voxelflow.engine.run import application_class

    application = application_class(config)
    options = EvaluationOptions(labels=labels, metrics=metrics, tolerance_mm=tolerance_mm)
    out = Path(out_dir) if out_dir is not None else None
    if application.evaluates_folders and is_path(predictions) and is_path(references):
        rows = application.evaluation_table(
            config, Path(predictions), Path(references), out_dir=out, options=options
        )
    else:
        role = application.reference_role or "seg"  # no role: the application refuses below
        rows = application.evaluation_table(
            config, as_images(predictions), as_images(references, role=role), out_dir=out,
            options=options,
        )  # fmt: skip
    return _table(rows, as_dataframe=as_dataframe)


def _table(rows: list[dict[str, Any]], *, as_dataframe: bool) -> Any:
    if not as_dataframe:
        return rows
    try:
        import pandas
    except ImportError:
        raise ConfigError("as_dataframe=True: expected pandas to be installed, got none") from None
    return pandas.DataFrame(rows)
