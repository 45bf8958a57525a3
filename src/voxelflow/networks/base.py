"""The small protocol every voxelflow network follows: size checks and output sizes.

A network subclasses :class:`Network` (an ``nn.Module``) and sets ``size_multiple`` /
``minimum_size`` (per spatial axis) so that :meth:`Network.check_input_size` can explain what
sizes it accepts, and overrides :meth:`Network.output_size` when its output differs from its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.networks.layers import check_spatial_dims


class Network(nn.Module):
    """Base of voxelflow networks: spatial_dims/channels checks and input-size contract.

    Args:
        spatial_dims: number of spatial axes (2 or 3, see ``supported_spatial_dims``).
        in_channels: channels of the input.
        out_channels: channels (or classes) of the output.

    Raises:
        ConfigError: unsupported ``spatial_dims`` or non-positive channels.
    """

    paper: ClassVar[str] = ""
    supported_spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        name = type(self).__name__
        self.spatial_dims = check_spatial_dims(spatial_dims, supported=self.supported_spatial_dims)
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} {key}: expected a positive int, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size_multiple: tuple[int, ...] = (1,) * self.spatial_dims
        self.minimum_size: tuple[int, ...] = (1,) * self.spatial_dims
        self.pad_to_multiple = False

    def check_input_size(self, input_size: Sequence[int]) -> None:
        """Raise :class:`ShapeError` unless ``input_size`` (spatial only) is accepted.

        Raises:
            ShapeError: wrong number of axes, too small, or not a multiple of ``size_multiple``.
        """
        size = tuple(input_size)  # no int(): symbolic sizes stay symbolic under torch.export
        name = type(self).__name__
        if len(size) != self.spatial_dims:
            raise ShapeError(
                f"{name}: expected {self.spatial_dims} spatial axes, got input size {list(size)}"
            )
        if any(s < m for s, m in zip(size, self.minimum_size)):
            raise ShapeError(
                f"{name}: expected a spatial size of at least {list(self.minimum_size)}, got {list(size)}"
            )
        if self.pad_to_multiple:
            return
        if any(s % m for s, m in zip(size, self.size_multiple)):
            suggestion = [-(-s // m) * m for s, m in zip(size, self.size_multiple)]
            raise ShapeError(
                f"{name}: expected each spatial size to be a multiple of {list(self.size_multiple)}, "
                f"got {list(size)} (try {suggestion}, or pad_to_multiple: true)"
            )

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the output for a spatial ``input_size`` (identity by default)."""
        self.check_input_size(input_size)
        return tuple(int(s) for s in input_size)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__}: expected input (B, {self.in_channels}, "
                f"{self.spatial_dims} spatial axes), got shape {list(x.shape)}"
            )
        self.check_input_size(x.shape[2:])

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the end of each spatial axis up to ``size_multiple`` when enabled."""
        if not self.pad_to_multiple:
            return x
        pads: list[int] = []
        for size, multiple in reversed(list(zip(x.shape[2:], self.size_multiple))):
            pads += [0, (-size) % multiple]
        return nn.functional.pad(x, pads)

    @staticmethod
    def _crop(y: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
        """Crop the spatial axes of ``y`` back to ``spatial_size`` (from the start)."""
        slices = tuple(slice(0, s) for s in spatial_size)
        return y[(slice(None), slice(None), *slices)]


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
