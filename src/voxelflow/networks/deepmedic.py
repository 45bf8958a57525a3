"""DeepMedic (Kamnitsas et al., MedIA 2017): normal + subsampled pathways of valid convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, center_crop
from voxelflow.networks.layers import conv, pool
from voxelflow.networks.layers import dropout as make_dropout


class DeepMedic(Network):
    """Two-pathway CNN with valid 3×3×3 convolutions; the output is smaller than the input.

    The normal pathway sees the central ``output + 2·n`` voxels at full resolution (``n`` =
    ``len(features)``); the subsampled pathway sees the whole input average-pooled by
    ``downsample_factor`` (odd, so both pathways stay centred), and its output is upsampled by
    repetition. The two are concatenated and classified by 1×1 "fully connected" layers.

    Size constraint: each input size ``S`` must be a multiple of ``f = downsample_factor`` and at
    least ``(2n + 1)·f``; the output size is ``S − 2n·f`` (with the defaults ``S − 48``: a 57³
    training window gives 9³, a 105³ inference window 57³, as in the paper and NiftyNet).
    Receptive field: ``(2n + 1)·f`` = 51 voxels. Default 3D parameter count (1 → 2 channels):
    about 0.66 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: features of each valid convolution (same in both pathways).
        downsample_factor: subsampling factor of the second pathway (odd).
        fc_features: features of the 1×1 layers after the merge.
        norm: normalisation name.
        act: activation name.
        dropout: dropout before the classifier.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *(spatial − 2n·f))``.
    """

    paper = "Kamnitsas et al., Medical Image Analysis 2017"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        features: Sequence[int] = (30, 30, 40, 40, 40, 40, 50, 50),
        downsample_factor: int = 3,
        fc_features: Sequence[int] = (150, 150),
        norm: str = "batch",
        act: str = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        if downsample_factor < 1 or downsample_factor % 2 == 0:
            raise ConfigError(
                f"deepmedic downsample_factor: expected an odd int ≥ 1, got {downsample_factor}"
            )
        dims, factor = self.spatial_dims, downsample_factor
        self.shrink = 2 * len(features)
        self.factor = factor
        self.size_multiple = (factor,) * dims
        self.minimum_size = ((self.shrink + 1) * factor,) * dims
        self.normal = self._pathway(in_channels, features, norm, act)
        self.subsampled = nn.Sequential(
            pool("avg", dims, kernel_size=factor), self._pathway(in_channels, features, norm, act)
        )
        layers: list[nn.Module] = []
        channels = 2 * features[-1]
        for width in fc_features:
            layers.append(
                ConvNormAct(
                    dims, channels, width, kernel_size=1, padding=0, norm_name=norm, act_name=act
                )
            )
            channels = width
        layers += [
            make_dropout(dims, dropout),
            conv(dims, channels, out_channels, kernel_size=1, padding=0),
        ]
        self.classifier = nn.Sequential(*layers)

    def _pathway(
        self, in_channels: int, features: Sequence[int], norm: str, act: str
    ) -> nn.Sequential:
        layers, channels = [], in_channels
        for width in features:
            layers.append(
                ConvNormAct(
                    self.spatial_dims,
                    channels,
                    width,
                    kernel_size=3,
                    padding="valid",
                    norm_name=norm,
                    act_name=act,
                )
            )
            channels = width
        return nn.Sequential(*layers)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Output size: ``input_size − 2·len(features)·downsample_factor`` per axis."""
        self.check_input_size(input_size)
        return tuple(int(s) - self.shrink * self.factor for s in input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *output_size(spatial))``."""
        self._check_input(x)
        out_size = [int(s) - self.shrink * self.factor for s in x.shape[2:]]
        normal = self.normal(center_crop(x, [s + self.shrink for s in out_size]))
        coarse = self.subsampled(x)
        for axis in range(self.spatial_dims):
            coarse = coarse.repeat_interleave(self.factor, dim=2 + axis)
        return self.classifier(torch.cat([normal, coarse], dim=1))
