"""U-Net in the spirit of nnU-Net's plain convolutional U-Net: the default segmentation network.

Ronneberger et al., MICCAI 2015 (2D); Çiçek et al., MICCAI 2016 (3D); Isensee et al., Nature
Methods 2021 (nnU-Net: instance norm, leaky ReLU, strided convolutions, transposed-convolution
upsampling, anisotropic strides and kernels per level, deep supervision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions, ResidualUnit
from voxelflow.networks.layers import as_tuple, conv, conv_transpose, upsample

IntOrList = int | Sequence[int]


def per_level(
    value: IntOrList | Sequence[IntOrList], levels: int, dims: int, *, name: str
) -> list[tuple[int, ...]]:
    """Expand an option given once, per axis, or per level (ints or per-axis lists) to per level.

    A flat list of ints is read per level when its length equals ``levels`` (so with 3 levels in
    3D, ``[1, 2, 2]`` means one value per level); write ``[[1, 2, 2]] * levels`` for per axis.

    Raises:
        ConfigError: when a per-level list has the wrong length.
    """
    if isinstance(value, int):
        return [(value,) * dims] * levels
    items = list(value)
    if all(isinstance(v, int) for v in items) and len(items) == dims and len(items) != levels:
        return [tuple(cast(list[int], items))] * levels  # all ints: checked above
    if len(items) != levels:
        raise ConfigError(f"unet {name}: expected {levels} entries (one per level), got {items}")
    return [as_tuple(v, dims, name=f"{name}[{i}]") for i, v in enumerate(items)]


class UNet(Network):
    """nnU-Net-style U-Net: configurable depth, strides, kernels, residual encoder, deep supervision.

    Size constraint: every spatial size must be a multiple of the product of the strides along
    that axis (16 with the defaults), unless ``pad_to_multiple`` is true. Default 3D parameter
    count (1 → 2 channels): about 16.5 M (MONAI's DynUNet with the same levels has the same
    convolutions, without norm affine terms and transposed-convolution biases).

    Deep supervision: ``forward(x)`` always returns the full-resolution logits (so
    ``torch.export`` and inference see one tensor). With ``deep_supervision: k`` the network also
    builds ``k`` extra 1×1 heads on the next-coarser decoder levels, and
    :meth:`forward_with_deep_supervision` returns ``[full_res, half_res, ...]`` (k + 1 tensors).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: output channels (classes).
        channels: features per level, e.g. ``[32, 64, 128, 256, 320]``.
        strides: per-level stride of the level's first convolution; an int, or a list with one
            int or per-axis list per level, e.g. ``[1, [1, 2, 2], 2, 2, 2]``. Level 0 is usually 1.
            Default: 1 then 2.
        kernel_sizes: per-level kernel size (same forms as ``strides``); default 3.
        num_convs: convolutions per level (encoder and decoder).
        residual: use residual units in the encoder (nnU-Net ResEnc style).
        norm: normalisation name.
        act: activation name.
        dropout: dropout probability after each encoder convolution.
        upsample_mode: ``transpose`` (learned), ``nearest`` or ``linear`` (+ 1×1 convolution).
        deep_supervision: number of extra lower-resolution heads (0 disables).
        pad_to_multiple: pad inputs internally to the size multiple and crop the output back.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.

    Example:
        >>> net = UNet(3, 1, 2, channels=[8, 16, 32], strides=[1, [1, 2, 2], 2])
        >>> net(torch.zeros(1, 1, 8, 16, 16)).shape
        torch.Size([1, 2, 8, 16, 16])
    """

    paper = "Isensee et al., Nature Methods 2021 (nnU-Net); Ronneberger et al., MICCAI 2015"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        strides: IntOrList | Sequence[IntOrList] | None = None,
        kernel_sizes: IntOrList | Sequence[IntOrList] = 3,
        num_convs: int = 2,
        residual: bool = False,
        norm: str = "instance",
        act: str = "leaky_relu",
        dropout: float = 0.0,
        upsample_mode: str = "transpose",
        deep_supervision: int = 0,
        pad_to_multiple: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims, levels = self.spatial_dims, len(channels)
        if levels < 2:
            raise ConfigError(f"unet channels: expected at least 2 levels, got {list(channels)}")
        if not 0 <= deep_supervision < levels - 1:
            raise ConfigError(
                f"unet deep_supervision: expected 0 to {levels - 2} for {levels} levels, got {deep_supervision}"
            )
        default_strides = [1] + [2] * (levels - 1)
        self.strides = per_level(strides or default_strides, levels, dims, name="strides")
        self.kernel_sizes = per_level(kernel_sizes, levels, dims, name="kernel_sizes")
        self.size_multiple = tuple(math.prod(s[axis] for s in self.strides) for axis in range(dims))
        self.pad_to_multiple = pad_to_multiple
        self.deep_supervision = deep_supervision
        self.norm = norm
        options: NormActOptions = {"norm_name": norm, "act_name": act}
        self.encoder = nn.ModuleList(
            self._encoder_level(
                level,
                in_channels if level == 0 else channels[level - 1],
                channels[level],
                num_convs=num_convs,
                residual=residual,
                dropout=dropout,
                options=options,
            )
            for level in range(levels)
        )
        self.upsamplers = nn.ModuleList(
            self._upsampler(
                channels[level + 1], channels[level], self.strides[level + 1], upsample_mode
            )
            for level in reversed(range(levels - 1))
        )
        self.decoder = nn.ModuleList(
            self._decoder_level(level, channels[level], num_convs, options)
            for level in reversed(range(levels - 1))
        )
        self.heads = nn.ModuleList(
            conv(dims, channels[level], out_channels, kernel_size=1, padding=0)
            for level in range(deep_supervision + 1)
        )

    def _encoder_level(
        self,
        level: int,
        in_ch: int,
        out_ch: int,
        *,
        num_convs: int,
        residual: bool,
        dropout: float,
        options: NormActOptions,
    ) -> nn.Module:
        dims, kernel, stride = self.spatial_dims, self.kernel_sizes[level], self.strides[level]
        if residual:
            return ResidualUnit(
                dims,
                in_ch,
                out_ch,
                kernel_size=kernel,
                stride=stride,
                num_convs=num_convs,
                **options,
            )
        return nn.Sequential(
            *[
                ConvNormAct(
                    dims,
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    kernel_size=kernel,
                    stride=stride if i == 0 else 1,
                    dropout_probability=dropout,
                    **options,
                )
                for i in range(num_convs)
            ]
        )

    def _decoder_level(
        self, level: int, width: int, num_convs: int, options: NormActOptions
    ) -> nn.Module:
        return nn.Sequential(
            *[
                ConvNormAct(
                    self.spatial_dims,
                    2 * width if index == 0 else width,
                    width,
                    kernel_size=self.kernel_sizes[level],
                    **options,
                )
                for index in range(num_convs)
            ]
        )

    def _upsampler(self, in_ch: int, out_ch: int, stride: tuple[int, ...], mode: str) -> nn.Module:
        if mode == "transpose":
            return conv_transpose(
                self.spatial_dims, in_ch, out_ch, kernel_size=stride, stride=stride
            )
        if mode not in ("nearest", "linear"):
            raise ConfigError(
                f"unet upsample_mode: expected 'transpose', 'nearest' or 'linear', got {mode!r}"
            )
        return nn.Sequential(
            upsample(self.spatial_dims, scale_factor=list(stride), mode=mode),
            conv(self.spatial_dims, in_ch, out_ch, kernel_size=1, padding=0),
        )

    def check_input_size(self, input_size: Sequence[int]) -> None:
        """Raise :class:`ShapeError` for a bad size (also: instance norm needs > 1 bottleneck voxel).

        Raises:
            ShapeError: wrong axes, not a multiple of ``size_multiple``, or a 1-voxel bottleneck.
        """
        super().check_input_size(input_size)
        bottleneck = [-(-s // m) for s, m in zip(input_size, self.size_multiple)]
        if self.norm == "instance" and all(b == 1 for b in bottleneck):
            raise ShapeError(
                f"UNet: expected more than one bottleneck voxel for instance norm (input larger than "
                f"{list(self.size_multiple)} along some axis), got input size {[int(s) for s in input_size]}"
            )

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs from the finest level upwards: ``[level 0, level 1, ...]``."""
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        outputs: list[torch.Tensor] = []
        for index, (up, block) in enumerate(zip(self.upsamplers, self.decoder)):
            x = block(torch.cat([up(x), skips[-index - 2]], dim=1))
            outputs.append(x)
        return outputs[::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits.

        Shape:
            ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
        """
        self._check_input(x)
        size = x.shape[2:]
        features = self._decode(self._pad(x))
        return self._crop(self.heads[0](features[0]), size)

    def forward_with_deep_supervision(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at full resolution then at ``deep_supervision`` coarser decoder levels.

        Shape:
            ``(B, in_channels, *spatial)`` → list of ``(B, out_channels, *spatial / factor_k)``
            where ``factor_k`` is the product of the strides of levels 1..k.
        """
        self._check_input(x)
        size = list(x.shape[2:])
        features = self._decode(self._pad(x))
        outputs = []
        for head, feature, factor in zip(self.heads, features, self.deep_supervision_scales()):
            outputs.append(self._crop(head(feature), [-(-s // f) for s, f in zip(size, factor)]))
        return outputs

    def deep_supervision_scales(self) -> list[tuple[int, ...]]:
        """Downsampling factor per axis of each output of :meth:`forward_with_deep_supervision`."""
        scales, factor = [], [1] * self.spatial_dims
        for level in range(self.deep_supervision + 1):
            if level > 0:
                factor = [f * s for f, s in zip(factor, self.strides[level])]
            scales.append(tuple(factor))
        return scales
