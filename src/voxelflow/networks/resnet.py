"""Pre-activation bottleneck ResNet classifiers (He et al., ECCV 2016), optionally with SE blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions, SqueezeExcitation
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv, pool
from voxelflow.networks.layers import dropout as make_dropout
from voxelflow.networks.layers import norm as make_norm


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: 1×1 (C/4) → 3×3 (stride) → 1×1 (C), optional SE, plus shortcut.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *(spatial / stride))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        norm: str,
        act: str,
        squeeze_excitation: bool,
    ) -> None:
        super().__init__()
        hidden = max(1, out_channels // 4)
        options: NormActOptions = {"norm_name": norm, "act_name": act, "preactivation": True}
        self.residual = nn.Sequential(
            ConvNormAct(spatial_dims, in_channels, hidden, kernel_size=1, padding=0, **options),
            ConvNormAct(spatial_dims, hidden, hidden, kernel_size=3, stride=stride, **options),
            ConvNormAct(spatial_dims, hidden, out_channels, kernel_size=1, padding=0, **options),
            SqueezeExcitation(spatial_dims, out_channels) if squeeze_excitation else nn.Identity(),
        )
        self.shortcut = (
            conv(spatial_dims, in_channels, out_channels, kernel_size=1, stride=stride, padding=0)
            if in_channels != out_channels or stride != 1
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C_in, *spatial)`` → ``(B, C_out, *spatial_out)``."""
        return self.residual(x) + self.shortcut(x)


class ResNet(Network):
    """Pre-activation bottleneck ResNet classifier: image → ``(B, out_channels)`` logits.

    A 3×3×3 stem with ``features[0]`` channels, then one stage per remaining ``features`` entry
    (stride 2 from the second stage on), global average pooling and a linear classifier
    (NiftyNet's ``resnet`` uses ``features = [16, 64, 128, 256]``). Any input size ≥ 1 works;
    ``output_size`` returns ``()`` (no spatial output). Default 3D parameter count (1 → 2
    classes): about 0.40 M (``se_resnet``: about 0.46 M).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes (or regression targets).
        features: stem features then features per stage.
        blocks_per_stage: bottleneck blocks per stage (int or one per stage).
        norm: normalisation name.
        act: activation name.
        dropout: dropout before the classifier.
        squeeze_excitation: add squeeze-and-excitation to every block.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels)``.
    """

    paper = "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        features: Sequence[int] = (16, 64, 128, 256),
        blocks_per_stage: int | Sequence[int] = 2,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
        squeeze_excitation: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims, stages = self.spatial_dims, len(features) - 1
        blocks = (
            [blocks_per_stage] * stages
            if isinstance(blocks_per_stage, int)
            else list(blocks_per_stage)
        )
        if stages < 1 or len(blocks) != stages:
            raise ConfigError(
                f"resnet blocks_per_stage: expected an int or {stages} ints, got {blocks_per_stage}"
            )
        layers: list[nn.Module] = [conv(dims, in_channels, features[0], kernel_size=3)]
        channels = features[0]
        for stage in range(stages):
            for index in range(blocks[stage]):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(
                    Bottleneck(
                        dims,
                        channels,
                        features[stage + 1],
                        stride=stride,
                        norm=norm,
                        act=act,
                        squeeze_excitation=squeeze_excitation,
                    )
                )
                channels = features[stage + 1]
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


class SEResNet(ResNet):
    """ResNet classifier with squeeze-and-excitation in every block (Hu et al., CVPR 2018).

    Same options as :class:`ResNet` (``squeeze_excitation`` is always true).

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels)``.
    """

    paper = "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        features: Sequence[int] = (16, 64, 128, 256),
        blocks_per_stage: int | Sequence[int] = 2,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            features=features,
            blocks_per_stage=blocks_per_stage,
            norm=norm,
            act=act,
            dropout=dropout,
            squeeze_excitation=True,
        )
