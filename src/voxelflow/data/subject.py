"""One reader of a subject's images, used by training, inference and evaluation.

:func:`read_row_images` reads a table row's files (one or more columns per role, stacked as
channels) with the one grid policy: when ``dataset.resample_to_first`` is true every other file
(an extra channel of a role as well as another role) is resampled onto the first ``image``
file's grid, linear for images and nearest for labels; when false a subject whose files' grids
differ is refused with a message naming both files. Training (``PreprocessedDataset.load_original``
in ``data/dataset.py``) calls it; :func:`read_subject` (inference, cross-validation ensembles)
wraps it for an experiment config, so a subject reads the same way at training and at inference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import DataError
from voxelflow.io.folders import input_folders, refuse_inside_inputs
from voxelflow.io.image import Image, ImageKind, Subject, check_same_grid, grid_difference
from voxelflow.io.table import SubjectRow
from voxelflow.transforms import functional as F

log = logging.getLogger(__name__)

DEFAULT_KINDS: dict[str, ImageKind] = {
    "label": "label",
    "weight": "weight",
    "sampling_map": "weight",
}


def default_kind(role: str) -> ImageKind:
    """``label`` → label; ``weight``/``sampling_map`` → weight; any other role → intensity."""
    return DEFAULT_KINDS.get(role, "intensity")


def read_image_file(path: Path, *, kind: ImageKind, non_finite: str = "warn") -> Image:
    """Read one image file with :func:`voxelflow.io.read_image` (imported lazily).

    Args:
        path: the file (or DICOM folder).
        kind: image kind of its role.
        non_finite: the preprocessing policy: ``"warn"`` replaces NaN/Inf voxels by 0 with a
            warning giving the count; ``"error"`` refuses the file.
    """
    from voxelflow.io.readers import read_image  # lazy: keeps data importable without readers

    return read_image(path, kind=kind, non_finite="zero" if non_finite == "warn" else non_finite)


def check_one_channel(image: Image, *, role: str, columns: Sequence[str], subject: str) -> None:
    """Refuse a multi-channel (4D) file in an ``image`` or ``label`` column.

    The network has one input channel per ``dataset.inputs.image`` column, so a 4D file would
    otherwise fail inside the network with a shape message naming no file.

    Raises:
        DataError: naming the file, its channel count and the channels the model expects.
    """
    if role not in ("image", "label") or image.data.shape[0] == 1:
        return
    expected = (
        f"{len(columns)} input channel(s), one per dataset.inputs.image column {list(columns)}"
        if role == "image" else "one label channel"
    )
    raise DataError(
        f"{str(image.path)!r} (subject {subject!r}, role {role!r}): expected one channel per "
        f"file, got {image.data.shape[0]} channels (a 4D file); the model takes {expected}. "
        "Split the file into one file per channel and list each as a column"
    )


def read_row_images(row: SubjectRow, inputs: Mapping[str, Sequence[str]], *,
                    kinds: Mapping[str, ImageKind] | None = None, resample_to_first: bool,
                    non_finite: str = "warn") -> dict[str, Image]:
    """Role → the row's files of that role stacked as channels, all on the first image's grid.

    Roles other than ``image`` whose columns are empty in the row are left out (new data has
    no labels); a training dataset checks beforehand that its rows have every column.

    Shape:
        each returned image: ``(C, *spatial)``, C = the number of the role's columns.

    Raises:
        GeometryError: grids differ and ``resample_to_first`` is false (naming both files).
        DataError: a 4D file in an ``image``/``label`` column.
    """
    files: dict[str, list[Image]] = {}
    for role, columns in inputs.items():
        if role != "image" and not all(row.columns.get(c) for c in columns):
            continue
        kind = (kinds or {}).get(role, default_kind(role))
        files[role] = [read_image_file(row.path(c), kind=kind, non_finite=non_finite)
                       for c in columns]
        for part in files[role]:
            check_one_channel(part, role=role, columns=columns, subject=row.name)
    reference = (files.get("image") or next(iter(files.values())))[0]
    images = {}
    for role, parts in files.items():
        aligned = [_onto_grid(reference, part, resample_to_first, subject=row.name)
                   for part in parts]
        data = torch.cat([p.data for p in aligned]) if len(aligned) > 1 else aligned[0].data
        images[role] = aligned[0].with_data(data)
    return images


def _onto_grid(reference: Image, image: Image, resample: bool, *, subject: str) -> Image:
    """``image`` on the reference's grid: resampled (``resample``) or checked to be on it."""
    difference = grid_difference(reference, image)
    if difference is None or not resample:
        check_same_grid(reference, image, what=f"images of subject {subject!r}")
        return image
    log.warning("subject %r: resampling %s onto %s (%s)", subject, image.path, reference.path,
                difference)  # fmt: skip
    method: F.Interpolation = "nearest" if image.kind == "label" else "linear"
    data = F.resample(image.data, image.affine, target_shape=reference.spatial_shape,
                      target_affine=reference.affine, interpolation=method)  # fmt: skip
    return image.with_data(data, affine=reference.affine.copy())


def read_subject(row: SubjectRow, experiment: ExperimentConfig) -> Subject:
    """The row's ``image`` columns stacked as channels (float), plus every other role the row has.

    The grid policy is :func:`read_row_images`'s, the one training uses.
    """
    images = read_row_images(row, experiment.dataset.inputs,
                             resample_to_first=experiment.dataset.resample_to_first,
                             non_finite=experiment.preprocessing.non_finite)  # fmt: skip
    images["image"] = images["image"].with_data(images["image"].data.float())
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
