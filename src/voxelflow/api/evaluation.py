"""The evaluation table of the Python API: predictions against references, one row per case."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from voxelflow.api.inputs import as_images, is_path
from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Image

__all__ = ["REFERENCE_ROLES", "evaluation_table"]

#: the reference image role of each application's evaluation.
REFERENCE_ROLES = {"segmentation": "label", "regression": "target"}


def evaluation_table(
    config: ExperimentConfig,
    predictions: Any,
    references: Any,
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
            its ``evaluation`` section, its ``application`` picks the metrics.
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
    settings = config.evaluation
    options = {
        "labels": labels if labels is not None else settings.labels,
        "metrics": list(metrics or settings.metrics),
        "tolerance": float(tolerance_mm if tolerance_mm is not None else settings.tolerance_mm),
    }
    application = config.application
    if application not in REFERENCE_ROLES:
        raise ConfigError(
            f"evaluate: expected application {' or '.join(REFERENCE_ROLES)}, got {application!r}"
        )
    if is_path(predictions) and is_path(references) and application == "segmentation":
        rows = _evaluate_segmentation_folders(predictions, references, out_dir, options)
    else:
        cases = _pair_cases(
            as_images(predictions), as_images(references, role=REFERENCE_ROLES[application])
        )
        if application == "segmentation":
            rows = _evaluate_segmentation(cases, out_dir, options)
        else:
            rows = _evaluate_regression(cases)
    return _table(rows, as_dataframe=as_dataframe)


def _pair_cases(
    predictions: dict[str, Image], references: dict[str, Image]
) -> dict[str, tuple[Image, Image]]:
    missing = sorted(set(predictions) - set(references))
    unused = sorted(set(references) - set(predictions))
    if missing or unused:
        raise DataError(
            f"expected a reference for every prediction and the reverse; "
            f"no reference for {missing or 'none'}, no prediction for {unused or 'none'}"
        )
    return {name: (predictions[name], references[name]) for name in sorted(predictions)}


def _evaluate_segmentation(
    cases: dict[str, tuple[Image, Image]], out_dir: Any, options: dict[str, Any]
) -> list[dict[str, Any]]:
    from voxelflow.metrics.evaluate import evaluate_images

    labelled = {
        name: (pred.with_data(pred.data, kind="label"), ref.with_data(ref.data, kind="label"))
        for name, (pred, ref) in cases.items()
    }
    result = evaluate_images(labelled, out_dir, report=out_dir is not None, **options)
    return _checked(result)


def _evaluate_segmentation_folders(
    pred_dir: Any, ref_dir: Any, out_dir: Any, options: dict[str, Any]
) -> list[dict[str, Any]]:
    from voxelflow.metrics.evaluate import evaluate_folders

    result = evaluate_folders(
        pred_dir, ref_dir, out_dir, workers=1, report=out_dir is not None, **options
    )
    return _checked(result)


def _checked(result: Any) -> list[dict[str, Any]]:
    if result.problems:
        listed = "; ".join(f"{subject}: {message}" for subject, _, message in result.problems[:5])
        raise DataError(f"evaluation failed for {len(result.problems)} subject(s): {listed}")
    return [dict(row) for row in result.rows]


def _evaluate_regression(cases: dict[str, tuple[Image, Image]]) -> list[dict[str, Any]]:
    from voxelflow.io.image import check_same_grid
    from voxelflow.metrics.regression import regression_metrics

    rows = []
    for name, (pred, ref) in cases.items():
        check_same_grid(pred, ref, what=f"prediction and reference of subject {name!r}")
        if pred.num_channels != ref.num_channels:
            raise DataError(
                f"subject {name!r}: expected the prediction's {pred.num_channels} channel(s) in the "
                f"reference, got {ref.num_channels}"
            )
        for channel in range(ref.num_channels):  # one row per channel (a column when several)
            values = regression_metrics(pred.numpy()[channel], ref.numpy()[channel])
            extra = {"channel": channel} if ref.num_channels > 1 else {}
            rows.append({"subject": name, **extra, **values})
    return rows


def _table(rows: list[dict[str, Any]], *, as_dataframe: bool) -> Any:
    if not as_dataframe:
        return rows
    try:
        import pandas
    except ImportError:
        raise ConfigError("as_dataframe=True: expected pandas to be installed, got none") from None
    return pandas.DataFrame(rows)
