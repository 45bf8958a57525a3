"""ToyNet: the smallest segmentation network, for smoke tests (NiftyNet's ``toynet``)."""

from __future__ import annotations

import torch
from torch import nn

from voxelflow.networks.base import Network
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv


class ToyNet(Network):
    """Tiny smoke-test network: 3×3(×3) convolution + activation → 1×1(×1) classifier.

    No size constraint; receptive field 3 voxels; 3D default (1 → 2 channels, 8 features):
    242 parameters.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        features: hidden features.
        act: activation name.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "none (smoke test; NiftyNet toynet)"
    supported_spatial_dims = (1, 2, 3)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        features: int = 8,
        act: str = "relu",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        self.body = nn.Sequential(
            conv(self.spatial_dims, in_channels, features, kernel_size=3),
            make_act(act),
            conv(self.spatial_dims, features, out_channels, kernel_size=1, padding=0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        return self.body(x)
