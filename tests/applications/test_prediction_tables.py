"""Every reader of prediction tables goes through voxelflow.io.table.read_prediction_table: a
missing table or column fails with the same error, naming the file and the column."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from voxelflow.applications.autoencoder.evaluation import evaluate_reconstructions
from voxelflow.applications.classification.evaluation import evaluate_predictions
from voxelflow.applications.gan.evaluation import evaluate_generated
from voxelflow.applications.gan.task import GanTask
from voxelflow.applications.regression.evaluation import evaluate_regression
from voxelflow.applications.segmentation.evaluation import evaluate_run
from voxelflow.cv.oof import merge_tables
from voxelflow.errors import DataError, MissingFileError

READERS: dict[str, tuple[str, Callable[[Path, Path], Any]]] = {
    "segmentation": ("prediction", lambda table, out: evaluate_run(None, table, [], out)),
    "regression": ("pred", lambda table, out: evaluate_regression(
        None, predictions=table, rows=[], out_dir=out, reference_role="target")),  # type: ignore[arg-type]
    "classification": ("prediction", lambda table, out: evaluate_predictions(
        table, [], out_dir=out, column="label", kind="class")),
    "autoencoder": ("recon", lambda table, out: evaluate_reconstructions(
        table, [], out, image_columns=["image"])),
    "gan": ("generated", lambda table, out: evaluate_generated(
        None, GanTask(noise_size=4), predictions=table, rows=[], out_dir=out)),  # type: ignore[arg-type]
    "cv": ("subject", lambda table, out: merge_tables([(0, table)], out / "merged.csv")),
}  # fmt: skip


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_tables_and_columns_fail_alike(reader: str, tmp_path: Path) -> None:
    column, read = READERS[reader]
    table = tmp_path / "table.csv"
    if reader != "segmentation":  # there, no inferred.csv means a folder of label maps (--ref)
        with pytest.raises(MissingFileError, match=r"the prediction table '.*table\.csv'"):
            read(table, tmp_path / "out")
    table.write_text("name,other\na,1\n")
    with pytest.raises(DataError, match=rf"table\.csv': expected columns .*missing .*'{column}'"):
        read(table, tmp_path / "out")
