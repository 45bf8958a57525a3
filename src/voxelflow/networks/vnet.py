"""V-Net (Milletari et al., 3DV 2016): residual stages of 5×5×5 convolutions, strided down/up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv, conv_transpose
from voxelflow.networks.layers import norm as make_norm


class _StageOptions(TypedDict):
    """Keywords every V-Net stage shares."""

    kernel_size: int
    norm: str
    act: str


class ResidualStack(nn.Module):
    """``num_convs`` same-size convolutions added to the input (1×1 projection if channels change).

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        *,
        num_convs: int,
        kernel_size: int,
        norm: str,
        act: str,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvNormAct(
                spatial_dims,
                in_channels if index == 0 else channels,
                channels,
                kernel_size=kernel_size,
                norm_name=norm,
                act_name=act,
                dropout_probability=dropout,
            )
            for index in range(num_convs)
        ]
        layers[-1] = nn.Sequential(*list(layers[-1].children())[:2])  # activation after the sum
        self.body = nn.Sequential(*layers)
        self.shortcut = (
            nn.Identity()
            if in_channels == channels
            else conv(spatial_dims, in_channels, channels, kernel_size=1, padding=0)
        )
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, channels, *spatial)``."""
        return self.act(self.body(x) + self.shortcut(x))


def down_stage(
    spatial_dims: int,
    in_channels: int,
    channels: int,
    num_convs: int,
    dropout: float,
    *,
    kernel_size: int,
    norm: str,
    act: str,
) -> nn.Sequential:
    """Stride-2 2×2×2 down-convolution then a residual stack. Shape: ``(B, C, *S)`` → ``(B, 2C, *S/2)``."""
    return nn.Sequential(
        ConvNormAct(
            spatial_dims,
            in_channels,
            channels,
            kernel_size=2,
            stride=2,
            padding=0,
            norm_name=norm,
            act_name=act,
        ),
        ResidualStack(
            spatial_dims,
            channels,
            channels,
            num_convs=num_convs,
            dropout=dropout,
            kernel_size=kernel_size,
            norm=norm,
            act=act,
        ),
    )


def up_conv(
    spatial_dims: int, in_channels: int, channels: int, norm: str, act: str
) -> nn.Sequential:
    """Transposed 2×2×2 stride-2 convolution + norm + act. Shape: ``(B, C, *S)`` → ``(B, c, *2S)``."""
    return nn.Sequential(
        conv_transpose(spatial_dims, in_channels, channels, kernel_size=2, stride=2),
        make_norm(norm, spatial_dims, channels),
        make_act(act),
    )


class VNet(Network):
    """V-Net: residual 5×5×5 stages, stride-2 down-convolutions and transposed up-convolutions.

    Size constraint: multiple of ``2 ** (len(down_convs) - 1)`` per axis (16 by default).
    Default 3D parameter count (1 → 2 channels): about 65.2 M with the paper's convolutions per
    stage; ``down_convs: [1, 1, 2, 3, 2], up_convs: [2, 2, 1, 1]`` gives MONAI's VNet (45.6 M).
    The paper used PReLU and no normalisation; batch norm is added by default as in MONAI.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        base_channels: features of the first stage; doubled per level.
        down_convs: convolutions per encoder stage, the first at full resolution (its first
            convolution maps the input channels), the last at the bottom; paper: [1, 2, 3, 3, 3].
        up_convs: convolutions per decoder stage from the bottom up, paper: [3, 3, 2, 1].
        kernel_size: kernel of the stage convolutions (5 in the paper).
        norm: normalisation name.
        act: activation name.
        dropout: dropout in the stages (0 disables).
        pad_to_multiple: pad inputs to the size multiple and crop the output back.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "Milletari et al., 3DV 2016"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        base_channels: int = 16,
        down_convs: Sequence[int] = (1, 2, 3, 3, 3),
        up_convs: Sequence[int] = (3, 3, 2, 1),
        kernel_size: int = 5,
        norm: str = "batch",
        act: str = "prelu",
        dropout: float = 0.0,
        pad_to_multiple: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims, levels = self.spatial_dims, len(down_convs)
        if levels < 2 or len(up_convs) != levels - 1:
            raise ConfigError(
                f"vnet up_convs: expected {levels - 1} entries for {levels} down_convs, got {list(up_convs)}"
            )
        self.size_multiple = (2 ** (levels - 1),) * dims
        self.pad_to_multiple = pad_to_multiple
        options: _StageOptions = {"kernel_size": kernel_size, "norm": norm, "act": act}
        channels = [base_channels * 2**level for level in range(levels)]
        self.input_stack = ResidualStack(
            dims, in_channels, base_channels, num_convs=down_convs[0], **options
        )
        self.down = nn.ModuleList(
            down_stage(dims, channels[i - 1], channels[i], down_convs[i], dropout, **options)
            for i in range(1, levels)
        )
        up_levels = list(reversed(range(levels - 1)))
        inputs = [channels[-1]] + [2 * channels[level] for level in up_levels[:-1]]
        self.up = nn.ModuleList(
            up_conv(dims, width, channels[level], norm, act)
            for width, level in zip(inputs, up_levels)
        )
        self.up_stacks = nn.ModuleList(
            ResidualStack(
                dims,
                2 * channels[level],
                2 * channels[level],
                num_convs=up_convs[index],
                dropout=dropout,
                **options,
            )
            for index, level in enumerate(up_levels)
        )
        previous = 2 * channels[0]
        self.head = conv(dims, previous, out_channels, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        size = x.shape[2:]
        x = self._pad(x)
        x = self.input_stack(x)
        skips = [x]
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        for index, (up, stack) in enumerate(zip(self.up, self.up_stacks)):
            x = stack(torch.cat([up(x), skips[-index - 2]], dim=1))
        return self._crop(self.head(x), size)
