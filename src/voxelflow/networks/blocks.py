"""Reusable blocks built from :mod:`voxelflow.networks.layers`: conv-norm-act, residual, SE.

Example:
    >>> block = ResidualUnit(3, 4, 8, stride=2)
    >>> block(torch.zeros(1, 4, 8, 8, 8)).shape
    torch.Size([1, 8, 4, 4, 4])
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from voxelflow.networks.layers import IntOrSequence, act, as_tuple, conv, dropout, norm, pool

INPLACE_ACTIVATIONS = ("relu", "leaky_relu", "elu")


class NormActOptions(TypedDict, total=False):
    """The :class:`ConvNormAct` keywords a network passes unchanged to all its blocks."""

    norm_name: str
    act_name: str
    preactivation: bool


def _can_be_inplace(act_name: str, norm_name: str) -> bool:
    return act_name in INPLACE_ACTIVATIONS and norm_name != "none"


class ConvNormAct(nn.Sequential):
    """Convolution → normalisation → activation (→ dropout), or the pre-activation order.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (int or per axis).
        stride: stride (int or per axis).
        dilation: dilation (int or per axis).
        padding: ``"same"`` (default) or ``"valid"`` or ints.
        norm_name: normalisation name (see :func:`~voxelflow.networks.layers.norm`).
        act_name: activation name (see :func:`~voxelflow.networks.layers.act`).
        dropout_probability: dropout after the activation (0 disables).
        preactivation: norm → act → conv instead of conv → norm → act.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial_out)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: IntOrSequence = 3,
        stride: IntOrSequence = 1,
        dilation: IntOrSequence = 1,
        padding: IntOrSequence | str = "same",
        norm_name: str = "instance",
        act_name: str = "leaky_relu",
        dropout_probability: float = 0.0,
        preactivation: bool = False,
    ) -> None:
        use_bias = norm_name in ("none",)
        convolution = conv(
            spatial_dims,
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            padding=padding,
            bias=use_bias or preactivation,
        )
        # In place after a norm layer: saves one activation tensor per layer. Never without a
        # norm: the activation would then overwrite the block input (or the conv output).
        activation = (
            act(act_name, inplace=True) if _can_be_inplace(act_name, norm_name) else act(act_name)
        )
        if preactivation:
            layers = [norm(norm_name, spatial_dims, in_channels), activation, convolution]
        else:
            layers = [convolution, norm(norm_name, spatial_dims, out_channels), activation]
        if dropout_probability > 0:
            layers.append(dropout(spatial_dims, dropout_probability))
        super().__init__(*layers)


class ResidualUnit(nn.Module):
    """``num_convs`` conv-norm-act layers plus a shortcut (1×1 projection when the shape changes).

    The first convolution carries the stride. With ``preactivation=True`` the layers are
    norm → act → conv (He et al. 2016) and nothing follows the sum; otherwise the last activation
    is applied after the sum (nnU-Net's residual encoder style).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (int or per axis).
        stride: stride of the first convolution (int or per axis).
        dilation: dilation of every convolution.
        num_convs: number of convolutions on the residual branch.
        norm_name: normalisation name.
        act_name: activation name.
        preactivation: pre-activation ordering.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *(spatial / stride))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: IntOrSequence = 3,
        stride: IntOrSequence = 1,
        dilation: IntOrSequence = 1,
        num_convs: int = 2,
        norm_name: str = "instance",
        act_name: str = "leaky_relu",
        preactivation: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(num_convs):
            layers.append(
                ConvNormAct(
                    spatial_dims,
                    in_channels if index == 0 else out_channels,
                    out_channels,
                    kernel_size=kernel_size,
                    stride=stride if index == 0 else 1,
                    dilation=dilation,
                    norm_name=norm_name,
                    act_name=act_name,
                    preactivation=preactivation,
                )
            )
        if not preactivation:  # the last activation moves after the sum
            layers[-1] = nn.Sequential(*list(layers[-1].children())[:-1])
            self.final_act: nn.Module = act(act_name)
        else:
            self.final_act = nn.Identity()
        self.residual = nn.Sequential(*layers)
        strided = any(step != 1 for step in as_tuple(stride, spatial_dims, name="stride"))
        changes_shape = in_channels != out_channels or strided
        self.shortcut = (
            conv(spatial_dims, in_channels, out_channels, kernel_size=1, stride=stride, padding=0)
            if changes_shape
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C_in, *spatial)`` → ``(B, C_out, *spatial_out)``."""
        return self.final_act(self.residual(x) + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation (Hu et al., CVPR 2018): global pool → MLP → sigmoid gate.

    Args:
        spatial_dims: 1, 2 or 3.
        channels: channels gated.
        reduction: bottleneck ratio of the MLP.

    Shape:
        ``(B, C, *spatial)`` → ``(B, C, *spatial)``.
    """

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = pool("adaptive_avg", spatial_dims, kernel_size=1)
        self.excite = nn.Sequential(
            conv(spatial_dims, channels, hidden, kernel_size=1, padding=0),
            act("relu"),
            conv(spatial_dims, hidden, channels, kernel_size=1, padding=0),
            act("sigmoid"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C, *spatial)`` → ``(B, C, *spatial)``."""
        return x * self.excite(self.squeeze(x))


def center_crop(x: torch.Tensor, size: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` to ``size``, centred (extra voxel removed at the start).

    Shape:
        ``(B, C, *spatial)`` → ``(B, C, *size)``.
    """
    slices = []
    for current, wanted in zip(x.shape[2:], size):
        start = (int(current) - int(wanted)) // 2
        slices.append(slice(start, start + int(wanted)))
    return x[(slice(None), slice(None), *slices)]
