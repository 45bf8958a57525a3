"""The GAN's task options and what it learns from its training split besides weights.

* :class:`GanTask` / :meth:`GanTask.from_config`: the ``task`` section (errors name ``task.<key>``).
* :class:`ConditionLookup`: the class index of a subject (window fields of a class-conditioned GAN).
* :func:`fit_classes`: the levels of the conditioning column.
* :func:`fit_output_grid`: a grid for generated images (the first training subject's
  preprocessed field of view at the window size) and a quantile map from preprocessed to original
  intensities (pooled over training subjects), so generated images come out in scanner units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxelflow.applications.common import resized_affine
from voxelflow.config.schema import Component
from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset
    from voxelflow.io.image import Image

GAN_LOSSES = ("gan_nonsaturating", "gan_least_squares", "gan_wasserstein")


class GanTask(BaseModel):
    """The ``task`` section of a GAN experiment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise_size: int = Field(gt=0, description="length of the generator's noise vector (required)")
    discriminator: Component = Field(
        default_factory=lambda: Component(name="discriminator"),
        description="discriminator network and options (image_size is set from the window)",
    )
    conditioning_column: str | None = Field(None, description="class column conditioning both nets")
    conditioning_role: str | None = Field(None, description="image role conditioning both nets")
    critic_steps: int = Field(1, ge=1, description="discriminator updates per generator update")
    gradient_penalty: float | None = Field(
        None, ge=0.0, description="WGAN-GP weight λ; default 10 with gan_wasserstein, else 0"
    )
    discriminator_optimizer: Component | None = Field(
        None, description="optimiser of the discriminator; default: the `optimizer` section"
    )
    discriminator_lr: float | None = Field(None, gt=0.0, description="its learning rate")
    discriminator_scheduler: Component | None = Field(
        None, description="schedule of the discriminator; default: the `scheduler` section"
    )
    output_intensity: Literal["original", "normalized"] = Field(
        "original", description="generated intensities in original units or preprocessed ones"
    )
    validation_samples: int = Field(4, ge=1, description="images generated per validation subject")

    @classmethod
    def from_config(cls, task: Mapping[str, Any]) -> GanTask:
        """Validate ``experiment.task``; errors name ``task.<key>``.

        Raises:
            ConfigError: a missing ``noise_size``, an unknown key or an invalid value.
        """
        try:
            return cls(**dict(task))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                key = ".".join(str(part) for part in ("task", *error["loc"]))
                got = "nothing" if error["type"] == "missing" else repr(error.get("input"))
                problems.append(f"{key}: {error['msg']} (got {got})")
            raise ConfigError("gan: " + "; ".join(problems)) from None


class ConditionLookup:
    """Window fields of a class-conditioned GAN: ``{"condition": class index}`` from a column.

    Args:
        column: the table column.
        classes: its values in index order (fitted on the training split).

    Raises:
        DataError: (when called) a subject without a value, or with an unknown one.
    """

    def __init__(self, column: str, classes: Sequence[str]) -> None:
        self.column, self.classes = column, [str(c) for c in classes]

    def index(self, name: str, fields: Mapping[str, Any]) -> int:
        """Class index of one subject's ``fields``."""
        value = fields.get(self.column)
        if value is None or str(value).strip() == "":
            raise DataError(
                f"subject {name!r}: expected a value in column {self.column!r}, got none"
            )
        if str(value) not in self.classes:
            raise DataError(
                f"subject {name!r}: expected column {self.column!r} in {self.classes} "
                f"(the training levels), got {str(value)!r}"
            )
        return self.classes.index(str(value))

    def __call__(self, subject: CachedSubject) -> dict[str, torch.Tensor]:
        return {"condition": torch.tensor(self.index(subject.name, subject.fields))}


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per sample. Shape: ``(B, C, *size)`` → same."""
    dims = tuple(range(1, images.ndim))
    mean = images.mean(dim=dims, keepdim=True)
    return (images - mean) / images.std(dim=dims, keepdim=True).clamp_min(1e-6)


def safe_name(value: object) -> str:
    """A file-name-safe version of a class level or subject name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)) or "_"


#: quantile levels of the intensity map, and limits of what it reads.
QUANTILES = np.linspace(0.0, 1.0, 201)
MAX_SUBJECTS, MAX_VOXELS = 32, 50_000

#: one generated group: (name, per-image table values, noise (N, Z), conditioning (N, K, *size)).
Plan = tuple[str, list[dict[str, Any]], torch.Tensor, "torch.Tensor | None"]


def fit_classes(dataset: PreprocessedDataset, train_indices: Sequence[int], column: str) -> list[str]:
    """Sorted levels of ``column`` over the training rows (numerically when all are numbers).

    Raises:
        DataError: training subjects without a value (all listed).
    """
    values, missing = [], []
    for index in train_indices:
        value = dataset.fields(index).get(column)
        if value is None or str(value).strip() == "":
            missing.append(dataset.rows[index].name)
        else:
            values.append(str(value))
    if missing:
        raise DataError(
            f"task.conditioning_column: expected a value of column {column!r} for every training "
            f"subject, got none for {missing}"
        )
    levels = sorted(set(values))
    try:
        return sorted(levels, key=float)
    except ValueError:
        return levels


def fit_output_grid(
    dataset: PreprocessedDataset, train_indices: Sequence[int], window: Sequence[int]
) -> dict[str, Any]:
    """Affine of generated images and the preprocessed → original intensity quantile map."""
    first = dataset[train_indices[0]]
    affine = resized_affine(np.asarray(first.affine), first.spatial_shape, window)
    step = max(1, len(train_indices) // MAX_SUBJECTS)
    rng = np.random.default_rng(0)
    processed, original = [], []
    for index in list(train_indices)[::step][:MAX_SUBJECTS]:
        processed.append(_subsample(np.asarray(dataset[index].arrays["image"]), rng))
        original.append(_subsample(dataset.load_original(index)["image"].numpy(), rng))
    pooled = [np.concatenate(parts, axis=1) for parts in (processed, original)]
    return {
        "affine": affine.tolist(),
        "intensity": {
            "processed": np.quantile(pooled[0], QUANTILES, axis=1).T.tolist(),
            "original": np.quantile(pooled[1], QUANTILES, axis=1).T.tolist(),
        },
    }


def _subsample(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    if flat.shape[1] <= MAX_VOXELS:
        return flat
    return flat[:, rng.choice(flat.shape[1], MAX_VOXELS, replace=False)]


def intensity_to_original(image: np.ndarray, intensity: Mapping[str, Any]) -> np.ndarray:
    """Map preprocessed intensities through the training quantile map, channel by channel."""
    out = np.empty_like(image, dtype=np.float32)
    for channel, (source, target) in enumerate(zip(intensity["processed"], intensity["original"])):
        source = np.maximum.accumulate(np.asarray(source, dtype=np.float64))
        out[channel] = np.interp(image[channel], source, np.asarray(target, dtype=np.float64))
    return out


def to_output_image(image: torch.Tensor, grid: Mapping[str, Any], *, intensity: str) -> Image:
    """A generated ``(C, *size)`` image on the output grid, in original or preprocessed units."""
    from voxelflow.io.image import Image

    data = image.float().numpy()
    if intensity == "original" and grid.get("intensity"):
        data = intensity_to_original(data, grid["intensity"])
    affine = np.asarray(grid["affine"]) if grid.get("affine") else np.eye(4)
    return Image(torch.from_numpy(np.ascontiguousarray(data)), affine)
