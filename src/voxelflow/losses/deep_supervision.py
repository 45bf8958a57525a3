"""Deep supervision: one loss over a list of predictions at decreasing resolutions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import LOSSES, build_loss

DOWNSAMPLE_MODES = ("nearest", "max")
_ADAPTIVE_MAX_POOL = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def resize_target(target: Tensor, size: Sequence[int], *, mode: str) -> Tensor:
    """Downsample a target (indices, one-hot, or a weight map) to a spatial ``size``.

    ``nearest`` picks one voxel per cell (``F.interpolate`` nearest); ``max`` keeps the maximum of
    each cell (adaptive max-pooling): for one-hot targets a class present anywhere in the cell is
    kept (nnU-Net's choice for region targets); for index targets the highest label wins.

    Shape:
        target ``(B, C, *spatial)`` → ``(B, C, *size)`` with the input dtype.
    """
    if list(target.shape[2:]) == list(size):
        return target
    as_float = target.to(torch.float64 if target.dtype == torch.float64 else torch.float32)
    if mode == "max":
        resized = _ADAPTIVE_MAX_POOL[len(size)](as_float, tuple(size))
    else:
        resized = F.interpolate(as_float, size=tuple(size), mode="nearest")
    return resized.to(target.dtype)


def default_scale_weights(count: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... normalised to sum to 1 (full resolution first)."""
    raw = [0.5**index for index in range(count)]
    return [value / sum(raw) for value in raw]


@LOSSES.register(
    "deep_supervision", description="wraps a loss over multi-resolution outputs, weights halving"
)
class DeepSupervisionLoss(nn.Module):
    """Apply one loss to each output of a deeply supervised network and sum with weights.

    The network returns a list of predictions, full resolution first, then coarser ones; the
    target (and voxel weight map) is downsampled to each resolution (``nearest`` or ``max``).
    Weights default to ``1, 1/2, 1/4, ...`` normalised to sum to 1 (nnU-Net halves them the same
    way). A single tensor prediction is passed straight to the wrapped loss.

    Args:
        loss: the wrapped loss: a registered name, a ``{name: ..., **kwargs}`` mapping, or a module.
        weights: one weight per output (normalised to sum to 1), or None for halving weights.
        downsample: ``nearest`` or ``max`` (for the target; weight maps always use ``nearest``).

    Shape:
        prediction: list of ``(B, C, *spatial_k)``; target ``(B, 1 or C, *spatial_0)``; returns a
        scalar.

    Example:
        >>> loss = DeepSupervisionLoss(loss={"name": "dice_ce", "include_background": False})
    """

    def __init__(
        self,
        *,
        loss: str | Mapping[str, Any] | nn.Module = "dice_ce",
        weights: Sequence[float] | None = None,
        downsample: str = "nearest",
    ) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLE_MODES:
            raise ConfigError(
                f"deep_supervision.downsample: expected one of {DOWNSAMPLE_MODES}, got {downsample!r}"
            )
        if weights is not None and (
            not weights or any(w < 0 for w in weights) or sum(weights) <= 0
        ):
            raise ConfigError(
                f"deep_supervision.weights: expected non-negative values with a positive sum, got {weights}"
            )
        self.loss = loss if isinstance(loss, nn.Module) else _build_inner(loss)
        self.weights = None if weights is None else [float(w) / sum(weights) for w in weights]
        self.downsample = downsample

    def scale_weights(self, count: int) -> list[float]:
        """The normalised weight of each of ``count`` outputs."""
        if self.weights is None:
            return default_scale_weights(count)
        if len(self.weights) != count:
            raise ShapeError(
                f"deep_supervision: expected {len(self.weights)} predictions (one per weight), got {count}"
            )
        return self.weights

    def forward(
        self, prediction: Tensor | Sequence[Tensor], target: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        """Return the weighted sum of the wrapped loss over all outputs."""
        if isinstance(prediction, Tensor):
            return self.loss(prediction, target, weight)
        if len(prediction) == 0:
            raise ShapeError(
                "deep_supervision: expected at least one prediction, got an empty list"
            )
        total = prediction[0].new_zeros(())
        for output, scale_weight in zip(prediction, self.scale_weights(len(prediction))):
            size = list(output.shape[2:])
            scaled_target = resize_target(target, size, mode=self.downsample)
            scaled_weight = None if weight is None else resize_target(weight, size, mode="nearest")
            total = total + scale_weight * self.loss(output, scaled_target, scaled_weight)
        return total


def _build_inner(spec: str | Mapping[str, Any]) -> nn.Module:
    """Build the wrapped loss from a name or a ``{name: ..., **kwargs}`` mapping."""
    if isinstance(spec, str):
        return build_loss(spec)
    if isinstance(spec, Mapping) and "name" in spec:
        kwargs = {key: value for key, value in spec.items() if key != "name"}
        return build_loss(spec["name"], **kwargs)
    raise ConfigError(
        f"deep_supervision.loss: expected a loss name or {{name: ..., ...}}, got {spec!r}"
    )
