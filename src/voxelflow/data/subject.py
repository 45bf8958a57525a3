"""One reader of a subject's images, used by training, inference and evaluation.

``read_subject`` turns a table row into a :class:`~voxelflow.io.image.Subject` with one grid
policy: ``dataset.resample_to_first`` resamples every other role onto the first ``image``
column's grid (linear for images, nearest for labels) or, when false, refuses a subject whose
grids differ. Inference (``engine/inference.py``) and cross-validation ensembles call it. Training
reads through ``PreprocessedDataset.load_original`` (``data/dataset.py``), which applies the same
policy in its own code: folding that into this function is still to do (issue 13).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from voxelflow.config.schema import ExperimentConfig
from voxelflow.io.folders import input_folders, refuse_inside_inputs
from voxelflow.io.image import Subject, check_same_grid, grid_difference
from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)


def read_subject(row: SubjectRow, experiment: ExperimentConfig) -> Subject:
    """The row's ``image`` columns stacked as channels, plus every other role the row has."""
    from voxelflow.data.dataset import check_one_channel, default_kind, read_image_file
    from voxelflow.transforms import functional as F

    policy = experiment.preprocessing.non_finite
    images = {}
    for role, columns in experiment.dataset.inputs.items():
        if role != "image" and not all(row.columns.get(c) for c in columns):
            continue  # new data: labels and targets are optional
        parts = [read_image_file(row.path(c), kind=default_kind(role), non_finite=policy) for c in columns]
        for part in parts:
            check_one_channel(part, role=role, columns=columns, subject=row.name)
        for part in parts[1:]:
            check_same_grid(parts[0], part, what=f"{role} images of subject {row.name!r}")
        data = torch.cat([p.data for p in parts]) if len(parts) > 1 else parts[0].data
        images[role] = parts[0].with_data(data.float() if role == "image" else data)
    first = images["image"]
    for role, image in list(images.items()):
        if experiment.dataset.resample_to_first and grid_difference(first, image) is not None:
            method = "nearest" if image.kind == "label" else "linear"
            data = F.resample(image.data, image.affine, target_shape=first.spatial_shape,
                              target_affine=first.affine, interpolation=method)
            images[role] = image.with_data(data, affine=first.affine.copy())
            continue
        check_same_grid(first, image, what=f"images of subject {row.name!r}")
    used = {c for columns in experiment.dataset.inputs.values() for c in columns}
    fields = {k: v for k, v in row.columns.items() if k not in used}
    return Subject(row.name, images, fields)


def dataset_input_folders(experiment: ExperimentConfig, rows: Iterable[SubjectRow], *,
                          base_dir: Path | None = None) -> set[Path]:
    """Every folder holding an input of ``rows``, plus the ``dataset.folders`` search folders."""
    columns = [c for cols in experiment.dataset.inputs.values() for c in cols]
    folders = input_folders(row.path(c) for row in rows for c in columns if row.columns.get(c))
    for pattern in (experiment.dataset.folders or {}).values():
        path = Path(pattern.path)
        folders.add(path if path.is_absolute() or base_dir is None else Path(base_dir) / path)
    return folders


def refuse_output_inside_dataset(output: Path, experiment: ExperimentConfig,
                                 rows: Sequence[SubjectRow], *, what: str,
                                 base_dir: Path | None = None) -> None:
    """The output-folder rule for a run/inference folder: not inside (or equal to) an input folder."""
    refuse_inside_inputs(output, dataset_input_folders(experiment, rows, base_dir=base_dir), key=what)
