"""In-memory inputs of the Python API: Images, Subjects and ``(array, affine)`` pairs → Subjects."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

from voxelflow.errors import DataError, ShapeError

if TYPE_CHECKING:
    from voxelflow.applications.base import Prediction
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Image, Subject
    from voxelflow.io.table import SubjectRow

    #: predictions or references of the API's evaluation: Predictions or Subjects (one or a
    #: list), a ``{subject: Image}`` mapping, or a folder of image files.
    EvaluationInput: TypeAlias = (
        Prediction | Subject | Sequence[Prediction | Subject] | Mapping[str, Image]
        | str | os.PathLike[str]
    )

__all__ = ["as_images", "as_subjects", "input_rows", "is_path"]


def as_subjects(images: object, *, channels: int) -> list[Subject]:
    """In-memory inputs → Subjects with a float ``image`` of ``channels`` channels.

    Args:
        images: one input, a list of inputs or a ``{name: input}`` mapping; an input is an
            :class:`Image`, a :class:`Subject` with an ``image`` role or an ``(array, affine)``
            pair. Unnamed inputs are named after their file, else ``image_000``, ``image_001`` ...
        channels: the number of image channels the model expects.

    Returns:
        one Subject per input, in order.

    Raises:
        ShapeError: wrong number of channels or dimensions (the subject is named).
        DataError: an input that is none of Image, Subject, ``(array, affine)`` (a file name:
            use :meth:`voxelflow.Experiment.infer_files`).

    Shape:
        arrays: ``(X, Y, Z)`` (one channel added) or ``(C, X, Y, Z)``.

    Example:
        >>> import numpy as np
        >>> subjects = as_subjects([(np.zeros((4, 5, 6)), np.diag([1.0, 1.0, 2.5, 1.0]))], channels=1)
        >>> subjects[0].name, tuple(subjects[0]["image"].data.shape), subjects[0]["image"].spacing
        ('image_000', (1, 4, 5, 6), (1.0, 1.0, 2.5))
    """
    from voxelflow.io.image import Subject

    subjects = []
    for index, (name, item) in enumerate(_named_items(images)):
        subject = _as_subject(item, name=name or f"image_{index:03d}")
        image = subject["image"]
        if image.num_channels != channels:
            raise ShapeError(
                f"subject {subject.name!r}: expected {channels} image channel(s) "
                f"(dataset.inputs.image), got {image.num_channels} in shape {tuple(image.data.shape)}"
            )
        images = {**subject.images, "image": image.with_data(image.data.float())}
        subjects.append(Subject(subject.name, images, dict(subject.fields)))
    return subjects


def _named_items(images: object) -> list[tuple[str | None, object]]:
    if is_path(images) or (isinstance(images, Sequence) and images and is_path(images[0])):
        raise DataError(
            f"expected in-memory images, got the file name {str(images)!r}: read it with "
            "voxelflow.read_image, or use Experiment.infer_files"
        )
    if isinstance(images, Mapping):
        return [(str(name), item) for name, item in images.items()]
    if _is_single(images):
        return [(None, images)]
    if isinstance(images, Sequence):
        return [(None, item) for item in images]
    raise DataError(
        f"expected an Image, a Subject, an (array, affine) pair or a list of them, "
        f"got {type(images).__name__}"
    )


def _is_single(item: object) -> bool:
    from voxelflow.io.image import Image, Subject

    return isinstance(item, (Image, Subject)) or _is_array_pair(item)


def _is_array_pair(item: object) -> TypeGuard[tuple[Any, Any]]:
    """An ``(array, affine)`` pair: a numpy array or tensor and a 4×4 matrix."""
    import numpy as np
    import torch

    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], (np.ndarray, torch.Tensor))
        and np.shape(item[1]) == (4, 4)
    )


def _as_subject(item: object, *, name: str) -> Subject:
    from voxelflow.io.image import Image, Subject
    from voxelflow.io.readers import split_suffix

    if isinstance(item, Subject):
        if "image" not in item:
            raise DataError(
                f"subject {item.name!r}: expected an 'image' role, got {sorted(item.images)}"
            )
        return item
    if isinstance(item, Image):
        stem = (
            split_suffix(item.path)[0]
            if item.path is not None and name.startswith("image_")
            else name
        )
        return Subject(stem, {"image": item})
    if _is_array_pair(item):
        return Subject(name, {"image": _pair_image(*item, name=name)})
    raise DataError(
        f"input {name!r}: expected an Image, a Subject or an (array, affine) pair, got {type(item).__name__}"
    )


def _pair_image(array: Any, affine: Any, *, name: str) -> Image:
    import torch

    from voxelflow.io.image import Image

    data = torch.as_tensor(array)
    if data.ndim == 3:
        data = data.unsqueeze(0)
    if data.ndim != 4:
        raise ShapeError(
            f"input {name!r}: expected an array (X, Y, Z) or (C, X, Y, Z), got {tuple(data.shape)}"
        )
    return Image(data, affine)


def as_images(items: EvaluationInput, *, role: str = "seg") -> dict[str, Image]:
    """``{subject: Image}`` from predictions, subjects, a mapping or a folder of files."""
    from voxelflow.applications.base import Prediction
    from voxelflow.io.image import Image, Subject

    if isinstance(items, (str, os.PathLike)):  # is_path, spelled out for the type checker
        from voxelflow.metrics.evaluate import list_images, read_label_image

        return {
            name: read_label_image(path, kind="intensity")
            for name, path in list_images(items).items()
        }
    named: list[tuple[object, object]]
    if isinstance(items, Mapping):
        named = list(items.items())
    elif isinstance(items, (Prediction, Subject)):
        named = [(items.name, items)]
    else:
        named = [(item.name, item) for item in items if isinstance(item, (Prediction, Subject))]
        if len(named) != len(items):
            raise DataError(
                "expected a list of Predictions or Subjects, or a {subject: Image} mapping"
            )
    found: dict[str, Image] = {}
    for name, item in named:
        if isinstance(item, Prediction):
            item = item.images[role] if role in item.images else next(iter(item.images.values()))
        elif isinstance(item, Subject):
            item = item[role]
        if not isinstance(item, Image):
            raise DataError(
                f"subject {name!r}: expected an Image to evaluate, got {type(item).__name__}"
            )
        found[str(name)] = item
    return found


def input_rows(path: Path, config: ExperimentConfig) -> list[SubjectRow]:
    """Rows of an image file, a folder of images or a CSV table (as ``voxelflow infer --input``)."""
    from voxelflow.io.table import rows_from_input

    return rows_from_input(
        path,
        image_columns=config.dataset.inputs["image"],
        subject_column=config.dataset.subject_column,
    )


def is_path(value: object) -> TypeGuard[str | os.PathLike[str]]:
    """True for a ``str`` or ``os.PathLike`` (a file or folder given by name)."""
    return isinstance(value, (str, os.PathLike))
