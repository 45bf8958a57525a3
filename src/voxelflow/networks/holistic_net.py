"""HolisticNet (Fidon et al., BrainLes 2017): dilated residual stack with merged score layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions
from voxelflow.networks.highresnet import dilated_residual_stack
from voxelflow.networks.layers import conv


class HolisticNet(Network):
    """Full-resolution residual stages at growing dilation; each stage has a score head, averaged.

    A 3×3×3 convolution, then ``len(dilations)`` stages of residual blocks; after every stage a
    score layer (3×3×3 convolution → 1×1 classifier) predicts class scores, and the prediction is
    the mean of all stage scores (holistic multi-scale supervision of the paper that introduced
    the generalised Wasserstein Dice loss). No size constraint. Default ELU activation as in
    NiftyNet. Default 3D parameter count (1 → 2 channels): about 1.3 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: features of every stage.
        dilations: dilation of each stage.
        blocks_per_stage: residual blocks per stage.
        score_features: features of the score layers' 3×3×3 convolution.
        norm: normalisation name.
        act: activation name.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "Fidon et al., Generalised Wasserstein Dice Score, BrainLes 2017"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        features: int = 70,
        dilations: Sequence[int] = (1, 2, 4, 2),
        blocks_per_stage: int = 1,
        score_features: int = 32,
        norm: str = "batch",
        act: str = "elu",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        if not dilations:
            raise ConfigError("holistic_net dilations: expected at least one stage, got []")
        dims = self.spatial_dims
        options: NormActOptions = {"norm_name": norm, "act_name": act}
        self.stem = ConvNormAct(dims, in_channels, features, **options)
        self.stages = nn.ModuleList(
            dilated_residual_stack(
                dims,
                features,
                features=[features],
                dilations=[dilation],
                blocks_per_stage=blocks_per_stage,
                norm=norm,
                act=act,
            )
            for dilation in dilations
        )
        self.scores = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(dims, features, score_features, **options),
                conv(dims, score_features, out_channels, kernel_size=1, padding=0),
            )
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        x = self.stem(x)
        scores = []
        for stage, score in zip(self.stages, self.scores):
            x = stage(x)
            scores.append(score(x))
        return torch.stack(scores, dim=0).mean(dim=0)
