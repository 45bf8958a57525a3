"""Convolutional autoencoders: a variational one (Kingma & Welling, ICLR 2014) and a plain one."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct
from voxelflow.networks.layers import act as make_act
from voxelflow.networks.layers import as_tuple, conv, conv_transpose


class FixedSizeNetwork(Network):
    """A network whose spatial size is fixed at construction (``image_size``)."""

    def _set_image_size(self, image_size: int | Sequence[int], levels: int) -> tuple[int, ...]:
        self.image_size = as_tuple(image_size, self.spatial_dims, name="image_size")
        factor = 2**levels
        if any(s % factor for s in self.image_size):
            raise ConfigError(
                f"{type(self).__name__} image_size: expected multiples of {factor} "
                f"({levels} halvings), got {list(self.image_size)}"
            )
        return tuple(s // factor for s in self.image_size)

    def check_input_size(self, input_size: Sequence[int]) -> None:
        """Raise :class:`ShapeError` unless ``input_size`` equals ``image_size``."""
        if tuple(int(s) for s in input_size) != self.image_size:
            raise ShapeError(
                f"{type(self).__name__}: expected spatial size {list(self.image_size)} (image_size), "
                f"got {[int(s) for s in input_size]}"
            )

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Always ``image_size``."""
        self.check_input_size(input_size)
        return self.image_size


def conv_encoder(
    dims: int, in_channels: int, features: Sequence[int], norm: str, act: str
) -> nn.Sequential:
    """Stride-2 ConvNormAct + ConvNormAct per level. Shape: ``(B, C, *S)`` → ``(B, F, *S / 2^L)``."""
    layers, channels = [], in_channels
    for width in features:
        layers += [
            ConvNormAct(dims, channels, width, stride=2, norm_name=norm, act_name=act),
            ConvNormAct(dims, width, width, norm_name=norm, act_name=act),
        ]
        channels = width
    return nn.Sequential(*layers)


def conv_decoder(
    dims: int, out_channels: int, features: Sequence[int], norm: str, act: str
) -> nn.Sequential:
    """Transposed conv ×2 + ConvNormAct per level (reverse of ``features``), 1×1 output conv."""
    layers: list[nn.Module] = []
    widths = list(reversed(features))
    for index, width in enumerate(widths):
        following = widths[index + 1] if index + 1 < len(widths) else width
        layers += [
            conv_transpose(dims, width, following),
            ConvNormAct(dims, following, following, norm_name=norm, act_name=act),
        ]
    layers.append(conv(dims, widths[-1], out_channels, kernel_size=1, padding=0))
    return nn.Sequential(*layers)


class Autoencoder(FixedSizeNetwork):
    """Deterministic convolutional autoencoder: image → latent vector → image.

    Encoder: per level a stride-2 and a same-size convolution (``features``), then two linear
    layers to ``latent_size``; the decoder mirrors it. Input size fixed by ``image_size``
    (multiple of ``2 ** len(features)``). Default 3D parameter count (1 → 1 channel, 32³):
    about 4.0 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: reconstructed channels.
        image_size: spatial size (int or per axis).
        features: features per encoder level (NiftyNet's VAE: 32, 64, 96).
        hidden_size: width of the linear layer between convolutions and latent.
        latent_size: size of the latent vector.
        norm: normalisation name.
        act: activation name.

    Shape:
        ``(B, in_channels, *image_size)`` → ``(B, out_channels, *image_size)``.
    """

    paper = "Hinton & Salakhutdinov, Science 2006 (autoencoders)"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        image_size: int | Sequence[int] = 32,
        features: Sequence[int] = (32, 64, 96),
        hidden_size: int = 256,
        latent_size: int = 64,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims = self.spatial_dims
        self.bottom_size = self._set_image_size(image_size, len(features))
        self.latent_size = latent_size
        flat = features[-1] * math.prod(self.bottom_size)
        self.encoder = conv_encoder(dims, in_channels, features, norm, act)
        self.to_hidden = nn.Sequential(nn.Flatten(1), nn.Linear(flat, hidden_size), make_act(act))
        self.to_latent = nn.Linear(hidden_size, latent_size)
        self.from_latent = nn.Sequential(
            nn.Linear(latent_size, hidden_size),
            make_act(act),
            nn.Linear(hidden_size, flat),
            make_act(act),
        )
        self.decoder = conv_decoder(dims, out_channels, features, norm, act)
        self.bottom_channels = features[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *image_size)`` → ``(B, latent_size)``."""
        self._check_input(x)
        return self.to_latent(self.to_hidden(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, latent_size)`` → ``(B, out_channels, *image_size)``."""
        features = self.from_latent(z).reshape(z.shape[0], self.bottom_channels, *self.bottom_size)
        return self.decoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, in_channels, *image_size)`` → ``(B, out_channels, *image_size)``."""
        return self.decode(self.encode(x))


class VariationalAutoencoder(Autoencoder):
    """Convolutional VAE: the encoder predicts ``mu`` and ``logvar`` of a Gaussian latent.

    ``forward(x)`` returns a dict ``{"recon", "mu", "logvar"}``; in training mode the latent is
    sampled with the reparameterisation trick, in eval mode ``z = mu`` (deterministic). The
    KL term is the loss's job (``voxelflow.losses``). Same options and sizes as
    :class:`Autoencoder`; default 3D parameter count (1 → 1 channel, 32³): about 4.1 M.

    Shape:
        ``(B, in_channels, *image_size)`` → recon ``(B, out_channels, *image_size)``,
        mu and logvar ``(B, latent_size)``.

    Example:
        >>> vae = VariationalAutoencoder(2, 1, 1, image_size=16, features=[8, 16], latent_size=4)
        >>> vae.sample(3).shape
        torch.Size([3, 1, 16, 16])
    """

    paper = "Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        image_size: int | Sequence[int] = 32,
        features: Sequence[int] = (32, 64, 96),
        hidden_size: int = 256,
        latent_size: int = 64,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            image_size=image_size,
            features=features,
            hidden_size=hidden_size,
            latent_size=latent_size,
            norm=norm,
            act=act,
        )
        self.to_logvar = nn.Linear(hidden_size, latent_size)

    # a VAE encodes to (mu, logvar) and returns a dict: not substitutable for its Autoencoder base
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Shape: ``(B, in_channels, *image_size)`` → ``mu, logvar`` each ``(B, latent_size)``."""
        self._check_input(x)
        hidden = self.to_hidden(self.encoder(x))
        return self.to_latent(hidden), self.to_logvar(hidden)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """Returns ``{"recon": (B, out, *image_size), "mu": (B, L), "logvar": (B, L)}``."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return {"recon": self.decode(z), "mu": mu, "logvar": logvar}

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``num_samples`` latents drawn from N(0, I).

        Shape:
            → ``(num_samples, out_channels, *image_size)``.
        """
        device = self.to_latent.weight.device
        z = torch.randn(num_samples, self.latent_size, generator=generator, device=device)
        return self.decode(z)
