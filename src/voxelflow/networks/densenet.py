"""DenseNet classifier (Huang et al., CVPR 2017): dense blocks joined by pooling transitions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct
from voxelflow.networks.dense_vnet import DenseFeatureStack
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv, pool
from voxelflow.networks.layers import dropout as make_dropout
from voxelflow.networks.layers import norm as make_norm


def transition(
    spatial_dims: int, in_channels: int, channels: int, norm: str, act: str
) -> list[nn.Module]:
    """Pre-activation 1×1 convolution then 2× average pooling (DenseNet transition layer)."""
    return [
        ConvNormAct(
            spatial_dims,
            in_channels,
            channels,
            kernel_size=1,
            padding=0,
            norm_name=norm,
            act_name=act,
            preactivation=True,
        ),
        pool("avg", spatial_dims, kernel_size=2),
    ]


class DenseNet(Network):
    """DenseNet classifier: stem, dense blocks with 1×1 + average-pool transitions, linear head.

    Any input size works (odd sizes are floored by the pooling; at least ``2 ** (blocks - 1)``
    voxels per axis). ``output_size`` returns ``()``. Default 3D parameter count (1 → 2 classes):
    about 0.98 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes.
        initial_features: features of the stem convolution.
        growth_rate: features added by each dense layer.
        layers_per_block: dense layers per block.
        compression: channel reduction of each transition (0 < c ≤ 1).
        norm: normalisation name.
        act: activation name.
        dropout: dropout before the classifier.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels)``.
    """

    paper = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        initial_features: int = 32,
        growth_rate: int = 16,
        layers_per_block: Sequence[int] = (4, 8, 8),
        compression: float = 0.5,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims = self.spatial_dims
        self.minimum_size = (2 ** (len(layers_per_block) - 1),) * dims
        layers: list[nn.Module] = [conv(dims, in_channels, initial_features, kernel_size=3)]
        channels = initial_features
        for index, num_layers in enumerate(layers_per_block):
            block = DenseFeatureStack(
                dims,
                channels,
                growth=growth_rate,
                num_layers=num_layers,
                dilation=1,
                norm=norm,
                act=act,
                dropout_probability=0.0,
            )
            layers.append(block)
            channels = block.out_channels
            if index < len(layers_per_block) - 1:
                reduced = max(1, int(channels * compression))
                layers += transition(dims, channels, reduced, norm, act)
                channels = reduced
        layers += [
            make_norm(norm, dims, channels),
            make_act(act),
            pool("adaptive_avg", dims, kernel_size=1),
            nn.Flatten(1),
            make_dropout(dims, dropout),
            nn.Linear(channels, out_channels),
        ]
        self.body = nn.Sequential(*layers)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Classifiers have no spatial output: returns ``()``."""
        self.check_input_size(input_size)
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels)``."""
        self._check_input(x)
        return self.body(x)
