"""Simulated resolution loss for super-resolution: average-pool by a factor, upsample back.

Super-resolution in voxelflow is a configuration of the regression application
(``task.degrade``): the network input is the high-resolution image degraded on the fly by
:func:`degrade`, so the dataset table needs only the high-resolution images.

The degradation models a low-resolution acquisition on the same field of view: each block of
``factor`` voxels per axis is averaged (area / box downsampling: a low-resolution voxel integrates
the signal of the high-resolution voxels it covers), then the low-resolution image is upsampled
back onto the original grid by linear (or nearest) interpolation with ``align_corners=False``,
which places every low-resolution sample at the centre of its block. A volume whose size is not a
multiple of the factor is padded (edge values repeated) on the far side first and cropped after.
The linearly upsampled input is also the *baseline* reported next to the network.

Example:
    >>> volume = torch.arange(8.0).reshape(1, 1, 8)[..., None].expand(1, 1, 8, 2)
    >>> degrade(volume, factor=[2, 1])[0, 0, :, 0].tolist()  # a linear ramp is unchanged inside
    [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxelflow.errors import ConfigError, ShapeError

Upsampling = Literal["linear", "nearest"]


class DegradeSettings(BaseModel):
    """``task.degrade`` of a super-resolution config.

    Attributes:
        factor: downsampling factor per spatial axis (one int for every axis), e.g. ``[2, 2, 2]``
            or ``[1, 1, 4]`` for thick slices along the third axis.
        upsample: how the low-resolution image returns to the original grid.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    factor: list[int] | int = Field(2, description="downsampling factor per spatial axis (≥ 1)")
    upsample: Upsampling = Field("linear", description="linear or nearest upsampling back")

    @field_validator("factor")
    @classmethod
    def _positive(cls, value: list[int] | int) -> list[int] | int:
        values = [value] if isinstance(value, int) else value
        if not values or any(v < 1 for v in values):
            raise ValueError(f"expected factors ≥ 1, got {value}")
        return value

    def factors(self, spatial_dims: int) -> list[int]:
        """The factor of each of ``spatial_dims`` axes.

        Raises:
            ConfigError: a list with another length than ``spatial_dims``.
        """
        return resolve_factor(self.factor, spatial_dims)


def resolve_factor(factor: int | Sequence[int], spatial_dims: int) -> list[int]:
    """One factor per axis: an int is repeated, a list must have one value per axis.

    Raises:
        ConfigError: a list whose length is not ``spatial_dims``.
    """
    if isinstance(factor, int):
        return [factor] * spatial_dims
    factors = [int(f) for f in factor]
    if len(factors) != spatial_dims:
        raise ConfigError(
            f"task.degrade.factor: expected {spatial_dims} factors (one per spatial axis), "
            f"got {factors}"
        )
    return factors


def degrade(
    volume: torch.Tensor, *, factor: int | Sequence[int], upsample: Upsampling = "linear"
) -> torch.Tensor:
    """Average-pool by ``factor`` per axis, then upsample back to the input's grid.

    Args:
        volume: batch of images.
        factor: downsampling factor per spatial axis (an int for all axes).
        upsample: ``"linear"`` (bi/trilinear) or ``"nearest"``.

    Returns:
        the degraded batch, same shape and dtype as ``volume``.

    Raises:
        ShapeError: ``volume`` is not ``(B, C, X, Y)`` or ``(B, C, X, Y, Z)``.
        ConfigError: a factor list of the wrong length.

    Shape:
        volume: ``(B, C, *spatial)`` → ``(B, C, *spatial)``
    """
    if volume.ndim not in (4, 5):
        raise ShapeError(
            f"degrade: expected a batch (B, C, X, Y) or (B, C, X, Y, Z), got {tuple(volume.shape)}"
        )
    spatial = tuple(volume.shape[2:])
    factors = resolve_factor(factor, len(spatial))
    if all(f == 1 for f in factors):
        return volume.clone()
    padded_shape = [-(-size // f) * f for size, f in zip(spatial, factors)]
    padding: list[int] = []
    for size, target in reversed(list(zip(spatial, padded_shape))):
        padding += [0, target - size]  # F.pad lists the last axis first
    source = volume.float()
    if any(padding):
        source = F.pad(source, padding, mode="replicate")
    pool = F.avg_pool3d if len(spatial) == 3 else F.avg_pool2d
    low = pool(source, kernel_size=factors, stride=factors)
    mode = (
        "nearest" if upsample == "nearest" else ("trilinear" if len(spatial) == 3 else "bilinear")
    )
    options = {} if mode == "nearest" else {"align_corners": False}
    high = F.interpolate(low, size=padded_shape, mode=mode, **options)
    crop = (slice(None), slice(None), *(slice(0, size) for size in spatial))
    return high[crop].to(volume.dtype).contiguous()
