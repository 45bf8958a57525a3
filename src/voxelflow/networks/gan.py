"""GAN networks: a generator (noise, optionally conditioned on an image) and a discriminator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ShapeError
from voxelflow.networks.blocks import ConvNormAct
from voxelflow.networks.generative import FixedSizeNetwork
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import conv, conv_transpose, linear_mode, resize


class Generator(FixedSizeNetwork):
    """Noise (+ conditioning image) → image: linear layer, then upsampling convolution levels.

    With ``conditioning_channels > 0`` the conditioning image, resized to every scale, is
    concatenated to the features at every level (as NiftyNet's ``simulator_gan``, Hu et al.
    2017). ``image_size`` must be a multiple of ``2 ** (len(features) - 1)``. Default 3D
    parameter count (1 channel, 32³, noise 100): about 7.3 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: unused (the input is noise); kept for the uniform constructor.
        out_channels: generated image channels.
        noise_size: length of the noise vector.
        image_size: spatial size of the generated image.
        conditioning_channels: channels of the conditioning image (0: unconditioned).
        features: features per level from the coarsest to the finest.
        norm: normalisation name.
        act: activation name.
        output_act: activation on the output (``none`` or ``tanh`` for images in [−1, 1]).

    Shape:
        noise ``(B, noise_size)``, conditioning ``(B, conditioning_channels, *image_size)`` →
        ``(B, out_channels, *image_size)``.
    """

    paper = "Goodfellow et al., NeurIPS 2014; Hu et al., Freehand ultrasound simulation, RAMBO 2017"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        noise_size: int = 100,
        image_size: int | Sequence[int] = 32,
        conditioning_channels: int = 0,
        features: Sequence[int] = (128, 64, 32),
        norm: str = "batch",
        act: str = "relu",
        output_act: str = "none",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims = self.spatial_dims
        self.bottom_size = self._set_image_size(image_size, len(features) - 1)
        self.noise_size, self.conditioning_channels = noise_size, conditioning_channels
        self.bottom_channels = features[0]
        self.from_noise = nn.Sequential(
            nn.Linear(noise_size, features[0] * math.prod(self.bottom_size)), make_act(act)
        )
        cond = conditioning_channels
        self.levels = nn.ModuleList(
            ConvNormAct(dims, width + cond, width, norm_name=norm, act_name=act)
            for width in features
        )
        self.upsamplers = nn.ModuleList(
            conv_transpose(dims, features[i], features[i + 1]) for i in range(len(features) - 1)
        )
        self.output = nn.Sequential(
            conv(dims, features[-1] + cond, out_channels, kernel_size=3), make_act(output_act)
        )
        self.linear = linear_mode(dims)

    def _with_conditioning(
        self, x: torch.Tensor, conditioning: torch.Tensor | None
    ) -> torch.Tensor:
        if conditioning is None:
            return x
        return torch.cat(
            [x, resize(conditioning, [int(s) for s in x.shape[2:]], mode=self.linear)], dim=1
        )

    def forward(
        self, noise: torch.Tensor, conditioning: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shape: ``(B, noise_size)`` [+ ``(B, cond, *image_size)``] → ``(B, out, *image_size)``."""
        if noise.dim() != 2 or noise.shape[1] != self.noise_size:
            raise ShapeError(
                f"Generator: expected noise (B, {self.noise_size}), got {list(noise.shape)}"
            )
        if (conditioning is None) != (self.conditioning_channels == 0):
            raise ShapeError(
                f"Generator: expected a conditioning image with {self.conditioning_channels} "
                f"channels, got {None if conditioning is None else list(conditioning.shape)}"
            )
        if conditioning is not None:
            self.check_input_size(conditioning.shape[2:])
        x = self.from_noise(noise).reshape(noise.shape[0], self.bottom_channels, *self.bottom_size)
        for index, level in enumerate(self.levels):
            x = level(self._with_conditioning(x, conditioning))
            if index < len(self.upsamplers):
                x = self.upsamplers[index](x)
        return self.output(self._with_conditioning(x, conditioning))


class Discriminator(FixedSizeNetwork):
    """Image → ``(B, out_channels)`` real/fake logits: stride-2 convolutions and a linear layer.

    Layer normalisation by default (per-sample, so it is safe with WGAN-GP's gradient penalty).
    ``image_size`` must be a multiple of ``2 ** len(features)``. Default 3D parameter count
    (1 channel, 32³): about 0.67 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (plus conditioning channels when the caller concatenates them).
        out_channels: logits per image (1 for real/fake).
        image_size: spatial size of the images.
        features: features per stride-2 level.
        norm: normalisation name.
        act: activation name (leaky ReLU, slope 0.2 as in DCGAN).

    Shape:
        ``(B, in_channels, *image_size)`` → ``(B, out_channels)``.
    """

    paper = "Radford et al., DCGAN, ICLR 2016"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int = 1,
        *,
        image_size: int | Sequence[int] = 32,
        features: Sequence[int] = (32, 64, 128),
        norm: str = "layer",
        act: str = "leaky_relu",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims = self.spatial_dims
        bottom = self._set_image_size(image_size, len(features))
        layers: list[nn.Module] = []
        channels = in_channels
        for width in features:
            layers.append(
                ConvNormAct(
                    dims,
                    channels,
                    width,
                    kernel_size=4,
                    stride=2,
                    padding=1,
                    norm_name=norm,
                    act_name=act,
                )
            )
            channels = width
        if act == "leaky_relu":
            for layer in layers:
                # each is a ConvNormAct without dropout: its last module is the LeakyReLU
                if isinstance(layer, nn.Sequential) and isinstance(layer[-1], nn.LeakyReLU):
                    layer[-1].negative_slope = 0.2
        layers += [nn.Flatten(1), nn.Linear(channels * math.prod(bottom), out_channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *image_size)`` → ``(B, out_channels)``."""
        self._check_input(x)
        return self.body(x)
