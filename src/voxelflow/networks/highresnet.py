"""HighRes3DNet (Li et al., IPMI 2017): dilated residual network at full resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions, ResidualUnit
from voxelflow.networks.layers import conv, conv_transpose
from voxelflow.networks.layers import dropout as make_dropout

VARIANTS = ("default", "small", "large")


def dilated_residual_stack(
    spatial_dims: int,
    in_channels: int,
    *,
    features: Sequence[int],
    dilations: Sequence[int],
    blocks_per_stage: int,
    norm: str,
    act: str,
) -> nn.Sequential:
    """Stages of pre-activation residual blocks, stage ``i`` with ``features[i]`` at ``dilations[i]``.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, features[-1], *spatial)``.
    """
    if len(features) != len(dilations):
        raise ConfigError(
            f"highresnet dilations: expected {len(features)} entries (one per features entry), got {list(dilations)}"
        )
    blocks: list[nn.Module] = []
    channels = in_channels
    for stage_features, dilation in zip(features, dilations):
        for _ in range(blocks_per_stage):
            blocks.append(
                ResidualUnit(
                    spatial_dims,
                    channels,
                    stage_features,
                    dilation=dilation,
                    norm_name=norm,
                    act_name=act,
                    preactivation=True,
                )
            )
            channels = stage_features
    return nn.Sequential(*blocks)


class HighResNet(Network):
    """HighRes3DNet: 3×3×3 conv, 3 stages × 3 dilated residual blocks (1/2/4), 1×1 convs.

    Variants: ``default`` (the paper), ``small`` (first convolution has stride 2 and a transposed
    convolution restores the size: ~8× cheaper in 3D; input sizes must be even), ``large`` (an
    extra 3×3×3 convolution after the residual stages and dropout before the classifier, as
    NiftyNet's ``highres3dnet_large``). Receptive field of the default: 87 voxels per axis.
    Default 3D parameter count (1 → 2 channels): about 0.81 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        variant: ``default``, ``small`` or ``large``.
        features: features per residual stage.
        dilations: dilation per residual stage.
        blocks_per_stage: residual blocks per stage.
        final_features: features of the 1×1 layer before the classifier (80 in the paper).
        norm: normalisation name.
        act: activation name.
        dropout: dropout before the classifier (default 0.5 for ``large``, else 0).
        pad_to_multiple: (``small`` only) pad odd sizes and crop the output back.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "Li et al., IPMI 2017 (arXiv:1707.01992)"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        variant: str = "default",
        features: Sequence[int] = (16, 32, 64),
        dilations: Sequence[int] = (1, 2, 4),
        blocks_per_stage: int = 3,
        final_features: int = 80,
        norm: str = "batch",
        act: str = "relu",
        dropout: float | None = None,
        pad_to_multiple: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        if variant not in VARIANTS:
            raise ConfigError(
                f"highresnet variant: expected one of {list(VARIANTS)}, got {variant!r}"
            )
        dims, first = self.spatial_dims, features[0]
        self.variant = variant
        stride = 2 if variant == "small" else 1
        self.size_multiple = (stride,) * dims
        self.pad_to_multiple = pad_to_multiple
        options: NormActOptions = {"norm_name": norm, "act_name": act}
        layers: list[nn.Module] = [
            ConvNormAct(dims, in_channels, first, kernel_size=3, stride=stride, **options),
            dilated_residual_stack(
                dims,
                first,
                features=features,
                dilations=dilations,
                blocks_per_stage=blocks_per_stage,
                norm=norm,
                act=act,
            ),
        ]
        if variant == "large":
            layers.append(ConvNormAct(dims, features[-1], features[-1], kernel_size=3, **options))
        if variant == "small":
            layers.append(conv_transpose(dims, features[-1], features[-1], kernel_size=2, stride=2))
        layers.append(
            ConvNormAct(dims, features[-1], final_features, kernel_size=1, padding=0, **options)
        )
        probability = dropout if dropout is not None else (0.5 if variant == "large" else 0.0)
        layers.append(make_dropout(dims, probability))
        layers.append(conv(dims, final_features, out_channels, kernel_size=1, padding=0))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        size = x.shape[2:]
        return self._crop(self.body(self._pad(x)), size)
