"""V-Net (Milletari et al., 3DV 2016): residual stages of 5×5×5 convolutions, strided down/up."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv, conv_transpose
from voxelflow.networks.layers import norm as make_norm


class ResidualStack(nn.Module):
    """``num_convs`` same-size convolutions whose output is added to the input (V-Net stage).

    Shape:
        ``(B, C, *spatial)`` → ``(B, C, *spatial)``.
    """

    def __init__(self, spatial_dims: int, channels: int, *, num_convs: int, kernel_size: int,
                 norm: str, act: str, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvNormAct(spatial_dims, channels, channels, kernel_size=kernel_size, norm_name=norm,
                        act_name=act, dropout_probability=dropout)
            for _ in range(num_convs - 1)
        ]
        layers += [conv(spatial_dims, channels, channels, kernel_size=kernel_size, bias=norm == "none"),
                   make_norm(norm, spatial_dims, channels)]
        self.body = nn.Sequential(*layers)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C, *spatial)`` → ``(B, C, *spatial)``."""
        return self.act(self.body(x) + x)


class VNet(Network):
    """V-Net: residual 5×5×5 stages, stride-2 down-convolutions and transposed up-convolutions.

    Size constraint: multiple of ``2 ** (len(down_convs) - 1)`` per axis (16 by default).
    Default 3D parameter count (1 → 2 channels): about 45.6 M (as in the paper, which used
    PReLU; batch norm is added here as in MONAI's VNet).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        base_channels: features of the first stage; doubled per level.
        down_convs: convolutions per encoder stage (the last is the bottom), paper: [1, 2, 3, 3, 3].
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
        options = {"kernel_size": kernel_size, "norm": norm, "act": act}
        channels = [base_channels * 2**level for level in range(levels)]
        self.input_conv = ConvNormAct(dims, in_channels, base_channels, kernel_size=kernel_size,
                                      norm_name=norm, act_name=act)
        self.input_shortcut = conv(dims, in_channels, base_channels, kernel_size=1, padding=0)
        self.input_stack = ResidualStack(dims, base_channels, num_convs=down_convs[0], **options)
        self.down = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(dims, channels[i - 1], channels[i], kernel_size=2, stride=2, padding=0,
                            norm_name=norm, act_name=act),
                ResidualStack(dims, channels[i], num_convs=down_convs[i], dropout=dropout, **options),
            )
            for i in range(1, levels)
        )
        self.up = nn.ModuleList()
        self.up_stacks = nn.ModuleList()
        previous = channels[-1]
        for index, level in enumerate(reversed(range(levels - 1))):
            self.up.append(nn.Sequential(
                conv_transpose(dims, previous, channels[level], kernel_size=2, stride=2),
                make_norm(norm, dims, channels[level]), make_act(act)))
            self.up_stacks.append(ResidualStack(dims, 2 * channels[level], num_convs=up_convs[index],
                                                dropout=dropout, **options))
            previous = 2 * channels[level]
        self.head = conv(dims, previous, out_channels, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        size = x.shape[2:]
        x = self._pad(x)
        x = self.input_stack(self.input_conv(x) + self.input_shortcut(x))
        skips = [x]
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        for index, (up, stack) in enumerate(zip(self.up, self.up_stacks)):
            x = stack(torch.cat([up(x), skips[-index - 2]], dim=1))
        return self._crop(self.head(x), size)
