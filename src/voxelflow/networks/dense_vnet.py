"""Dense V-Net (Gibson et al., IEEE TMI 2018): dense feature stacks at three scales."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions
from voxelflow.networks.layers import conv, linear_mode, pool, resize


class DenseFeatureStack(nn.Module):
    """``num_layers`` pre-activation 3×3×3 convolutions, each fed all earlier outputs (DenseNet).

    Shape:
        ``(B, C, *spatial)`` → ``(B, C + num_layers · growth, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        *,
        growth: int,
        num_layers: int,
        dilation: int,
        norm: str,
        act: str,
        dropout_probability: float,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(
                spatial_dims,
                in_channels + index * growth,
                growth,
                kernel_size=3,
                dilation=dilation,
                norm_name=norm,
                act_name=act,
                preactivation=True,
                dropout_probability=dropout_probability,
            )
            for index in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C, *spatial)`` → ``(B, C + num_layers · growth, *spatial)``."""
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseVNet(Network):
    """Dense V-Net: stride-2 input conv, three dense stacks at 1/2, 1/4, 1/8, merged skip convs.

    Each scale's dense stack feeds a skip convolution; the 1/4 and 1/8 skips are upsampled to
    1/2, concatenated, classified, and the logits upsampled linearly to the input size. Optional
    learned low-resolution spatial prior added to the logits (``use_prior``), as in the paper.
    Size constraint: multiple of 8 per axis. Default 3D parameter count (1 → 2 channels): about
    0.87 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        initial_features: features of the stride-2 5×5×5 input convolution.
        growth_rates: dense growth rate per scale.
        layers_per_stage: dense layers per scale.
        skip_features: features of each scale's skip convolution.
        downsample_features: features of the stride-2 convolutions between scales (2 entries).
        dilations: dilation of the dense convolutions per scale.
        use_prior: add a learned spatial prior of ``prior_size`` per axis to the logits.
        prior_size: size of the prior per axis.
        norm: normalisation name.
        act: activation name.
        dropout: dropout after each dense layer.
        pad_to_multiple: pad inputs to a multiple of 8 and crop the output back.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "Gibson et al., IEEE TMI 2018 (doi:10.1109/TMI.2018.2806309)"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        initial_features: int = 24,
        growth_rates: Sequence[int] = (4, 8, 16),
        layers_per_stage: Sequence[int] = (5, 10, 10),
        skip_features: Sequence[int] = (12, 24, 24),
        downsample_features: Sequence[int] = (24, 24),
        dilations: Sequence[int] = (1, 1, 1),
        use_prior: bool = False,
        prior_size: int = 24,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
        pad_to_multiple: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        lengths = {len(growth_rates), len(layers_per_stage), len(skip_features), len(dilations)}
        if lengths != {3} or len(downsample_features) != 2:
            raise ConfigError(
                "dense_vnet: expected 3 entries in growth_rates, layers_per_stage, "
                "skip_features, dilations and 2 in downsample_features, got "
                f"{[list(growth_rates), list(layers_per_stage), list(skip_features), list(dilations), list(downsample_features)]}"
            )
        dims = self.spatial_dims
        self.size_multiple = (8,) * dims
        self.pad_to_multiple = pad_to_multiple
        options: NormActOptions = {"norm_name": norm, "act_name": act}
        self.input_conv = ConvNormAct(
            dims, in_channels, initial_features, kernel_size=5, stride=2, **options
        )
        self.input_pool = pool("avg", dims, kernel_size=2)
        stage_inputs = [initial_features + in_channels, *downsample_features]
        stacks = [
            DenseFeatureStack(
                dims,
                stage_inputs[stage],
                growth=growth_rates[stage],
                num_layers=layers_per_stage[stage],
                dilation=dilations[stage],
                norm=norm,
                act=act,
                dropout_probability=dropout,
            )
            for stage in range(3)
        ]
        self.stacks = nn.ModuleList(stacks)
        self.skips = nn.ModuleList(
            ConvNormAct(dims, stack.out_channels, width, **options)
            for stack, width in zip(stacks, skip_features)
        )
        self.downs = nn.ModuleList(
            ConvNormAct(
                dims, stacks[stage].out_channels, stage_inputs[stage + 1], stride=2, **options
            )
            for stage in range(2)
        )
        self.classifier = conv(dims, sum(skip_features), out_channels, kernel_size=3)
        prior_shape = (1, out_channels, *([prior_size] * dims))
        self.prior = nn.Parameter(torch.zeros(prior_shape)) if use_prior else None
        self.linear = linear_mode(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        size = x.shape[2:]
        x = self._pad(x)
        full_size = [int(s) for s in x.shape[2:]]
        features = torch.cat([self.input_conv(x), self.input_pool(x)], dim=1)
        skips = []
        for stage, (stack, skip) in enumerate(zip(self.stacks, self.skips)):
            features = stack(features)
            skips.append(skip(features))
            if stage < 2:
                features = self.downs[stage](features)
        half_size = [int(s) for s in skips[0].shape[2:]]
        merged = torch.cat(
            [skips[0]] + [resize(s, half_size, mode=self.linear) for s in skips[1:]], dim=1
        )
        logits = resize(self.classifier(merged), full_size, mode=self.linear)
        if self.prior is not None:
            logits = logits + resize(self.prior, full_size, mode=self.linear)
        return self._crop(logits, size)
