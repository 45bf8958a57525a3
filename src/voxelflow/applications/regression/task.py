"""Options and target statistics of the regression application (``task:`` of a config).

:class:`RegressionTask` validates the free ``task`` dict of an experiment; errors name the key
as ``task.<key>``. :class:`TargetScaling` holds the per-channel mean and standard deviation of the
training targets (fitted by :func:`fit_target_scaling` on the training split, saved in the run's
``preprocessing.json`` under ``"task"``) and maps targets to standardised units and back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxelflow.applications.regression.degrade import DegradeSettings
from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.data.dataset import PreprocessedDataset

log = logging.getLogger(__name__)


class RegressionTask(BaseModel):
    """``task:`` options of the regression application.

    Attributes:
        loss_border: voxels ignored at each window edge by the loss (one int, or one per axis):
            predictions near a window border lack context.
        mask_role: a role of ``dataset.inputs`` whose non-zero voxels restrict the loss (and the
            validation / evaluation metrics); null = every voxel.
        standardize: standardize the target with the training mean and standard deviation
            (restored at inference, so outputs keep the target's units).
        residual: the network predicts a correction added to its input (input and output
            channels must match; natural for super-resolution and denoising).
        degrade: super-resolution: the ``image`` role is the high-resolution target and the
            network input is that image degraded on the fly (see ``applications/regression/degrade.py``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    loss_border: int | list[int] = Field(0, description="voxels ignored at each window edge")
    mask_role: str | None = Field(None, description="role whose non-zero voxels restrict the loss")
    standardize: bool = Field(True, description="standardize targets with training statistics")
    residual: bool = Field(False, description="network output = input + correction")
    degrade: DegradeSettings | None = Field(None, description="super-resolution degradation")

    @field_validator("loss_border")
    @classmethod
    def _non_negative(cls, value: int | list[int]) -> int | list[int]:
        values = [value] if isinstance(value, int) else value
        if any(v < 0 for v in values):
            raise ValueError(f"expected borders ≥ 0, got {value}")
        return value

    @classmethod
    def from_config(cls, task: Mapping[str, Any]) -> RegressionTask:
        """Validate ``experiment.task``.

        Raises:
            ConfigError: an unknown key or a bad value, naming ``task.<key>``.
        """
        try:
            return cls.model_validate(dict(task))
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            raise ConfigError(
                f"task.{key}: {error['msg']}, got {error.get('input')!r} "
                f"(regression options: {', '.join(cls.model_fields)})"
            ) from None

    def borders(self, window: Sequence[int]) -> list[int]:
        """The loss border of each window axis, checked against the window.

        Raises:
            ConfigError: a list of the wrong length, or a border leaving no voxel of the window.
        """
        dims = len(window)
        border = self.loss_border
        borders = [border] * dims if isinstance(border, int) else list(border)
        if len(borders) != dims:
            raise ConfigError(
                f"task.loss_border: expected one value or {dims} (one per axis), got {border}"
            )
        for size, edge in zip(window, borders):
            if size > 0 and 2 * edge >= size:
                raise ConfigError(
                    f"task.loss_border: expected 2 × border < window size on every axis, got "
                    f"border {borders} for window {list(window)}"
                )
        return borders


@dataclass(frozen=True)
class TargetScaling:
    """Per-channel affine map between target units and the network's standardised units.

    Example:
        >>> scaling = TargetScaling(mean=[10.0], std=[2.0])
        >>> scaling.standardize(torch.tensor([[[12.0]]])).item()
        1.0
    """

    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        """``(values − mean) / std``. Shape: ``(B, C, *spatial)`` (C = 1 or the channels)."""
        return (values - self._per_channel(self.mean, values)) / self._per_channel(self.std, values)

    def restore(self, values: torch.Tensor) -> torch.Tensor:
        """``values × std + mean``: back to the target's units. Shape: ``(B, C, *spatial)``."""
        return values * self._per_channel(self.std, values) + self._per_channel(self.mean, values)

    @staticmethod
    def _per_channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(list(values), dtype=like.dtype, device=like.device)
        if tensor.numel() == 1:
            return tensor.reshape([1] * like.ndim)
        return tensor.reshape([1, -1] + [1] * (like.ndim - 2))

    def as_dict(self) -> dict[str, list[float]]:
        """JSON form saved in ``preprocessing.json`` and checkpoints."""
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> TargetScaling:
        """From :meth:`as_dict` output; identity when the state has no statistics."""
        if not state or "mean" not in state:
            return cls()
        return cls(mean=[float(m) for m in state["mean"]], std=[float(s) for s in state["std"]])


def fit_target_scaling(
    subjects: PreprocessedDataset, indices: Sequence[int], *, role: str, mask_role: str | None = None
) -> TargetScaling:
    """Mean and standard deviation per channel of ``role`` over the training subjects.

    Args:
        subjects: indexable → :class:`~voxelflow.data.cached.CachedSubject` (the dataset).
        indices: the training rows.
        role: the role holding the targets (``target``, or ``image`` for super-resolution).
        mask_role: only voxels where this role is non-zero count.

    Raises:
        DataError: no training voxel (empty split or empty masks).
    """
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    count = 0
    for index in indices:
        subject = subjects[index]
        values = np.asarray(subject.arrays[role], dtype=np.float64)
        flat = values.reshape(values.shape[0], -1)
        if mask_role is not None:
            inside = np.asarray(subject.arrays[mask_role]).reshape(-1) != 0
            flat = flat[:, inside]
        sums, sums2, n = flat.sum(axis=1), np.square(flat).sum(axis=1), flat.shape[1]
        total = sums if total is None else total + sums
        squares = sums2 if squares is None else squares + sums2
        count += n
    if total is None or squares is None or not count:
        raise DataError(
            f"expected training voxels to fit the {role!r} mean and standard deviation, got none "
            f"({len(indices)} training subjects)"
        )
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    if np.any(std < 1e-8):
        log.warning(
            "target %r is constant on the training split: standard deviation set to 1", role
        )
        std = np.where(std < 1e-8, 1.0, std)
    return TargetScaling(mean=[float(m) for m in mean], std=[float(s) for s in std])
