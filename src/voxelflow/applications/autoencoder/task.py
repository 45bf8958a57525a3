"""Configuration of the autoencoder application: ``task`` options, window and network checks.

Everything here is decided from the config before training: the ``task:`` section
(:class:`AutoencoderTask`), the fixed window the network is built for, whether network and loss
pair up (a ``vae`` network needs the ``vae`` loss, a plain ``autoencoder`` a reconstruction
loss), and the settings the application keeps (:class:`AutoencoderOptions`).

Example:
    >>> AutoencoderTask.from_config({"intensity_units": "normalized"}).intensity_units
    'normalized'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from voxelflow.applications.common import WindowedInference
from voxelflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from voxelflow.config.schema import Component, ExperimentConfig, PreprocessingConfig

#: inference mode → the prediction table it writes.
TABLES = {
    "reconstruct": "reconstructions.csv",
    "encode": "latents.csv",
    "sample": "samples.csv",
    "interpolate": "interpolation.csv",
}


class AutoencoderTask(BaseModel):
    """``task:`` options of the autoencoder application.

    Attributes:
        intensity_units: ``original`` writes reconstructions in the input file's units (the
            normalisation inverted per subject); ``normalized`` keeps the network's units.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    intensity_units: Literal["original", "normalized"] = "original"

    @classmethod
    def from_config(cls, task: Mapping[str, Any]) -> AutoencoderTask:
        """Validate the config's ``task`` section. Raises ConfigError naming ``task.<key>``."""
        try:
            return cls(**dict(task or {}))
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            accepted = ", ".join(cls.model_fields)
            raise ConfigError(
                f"task.{key}: {error['msg']} (got {error.get('input')!r}); autoencoder task options: "
                f"{accepted}"
            ) from None


@dataclass(frozen=True)
class AutoencoderOptions:
    """Settings of :class:`AutoencoderApplication` besides its network and loss.

    Attributes:
        window: the network's input size (``sampling.window``).
        whole_image: trained on whole images resized to ``window`` (``resize`` sampler).
        overlap: sliding-window overlap (window training).
        blend: sliding-window blending (window training).
        inference_batch_size: windows per network call (window training).
        accumulate: ``float32`` or ``float16``, the sliding window's blending dtype.
        intensity_units: ``original`` or ``normalized`` (reconstructions).
        sample_affine: 4×4 affine of generated images, or None for identity.
        preprocessing: the run's preprocessing config (to invert the normalisation).
    """

    window: tuple[int, ...]
    whole_image: bool = True
    overlap: float = 0.5
    blend: str = "gaussian"
    inference_batch_size: int = 4
    intensity_units: str = "original"
    sample_affine: np.ndarray | None = field(default=None, compare=False)
    preprocessing: PreprocessingConfig | None = field(default=None, compare=False)
    accumulate: str = "float32"

    @property
    def windowed(self) -> WindowedInference:
        """The sliding-window settings (window training's reconstructions)."""
        return WindowedInference(
            self.window, self.overlap, self.blend, self.inference_batch_size, self.accumulate
        )


def training_window(experiment: ExperimentConfig) -> tuple[int, ...]:
    """``sampling.window`` as positive sizes (the network has one fixed input size)."""
    window = tuple(int(size) for size in experiment.sampling.window)
    if any(size <= 0 for size in window) or len(window) not in (2, 3):
        raise ConfigError(
            "sampling.window: expected 2 or 3 positive sizes for the autoencoder (the network's "
            f"fixed image_size), got {list(window)}"
        )
    inference_window = experiment.inference.window
    if inference_window is not None and tuple(inference_window) != window:
        raise ConfigError(
            f"inference.window: expected null or the training window {list(window)} (the "
            f"autoencoder has a fixed input size), got {list(inference_window)}"
        )
    return window


def image_size_option(network: Component, window: tuple[int, ...]) -> dict[str, Any]:
    """``{"image_size": window}`` for fixed-size networks that were not given one."""
    import inspect

    from voxelflow.networks import NETWORKS

    given = network.kwargs.get("image_size")
    if given is not None:
        sizes = [int(given)] * len(window) if isinstance(given, int) else [int(s) for s in given]
        if sizes != list(window):
            raise ConfigError(
                f"network.image_size: expected the window {list(window)} (sampling.window), got "
                f"{given}; leave it out to use the window"
            )
        return {}
    try:
        accepted = inspect.signature(NETWORKS.get(network.name)).parameters
    except (TypeError, ValueError):
        return {}
    return {"image_size": list(window)} if "image_size" in accepted else {}


def check_pairing(network: nn.Module, loss: nn.Module, experiment: ExperimentConfig) -> bool:
    """True for a variational setup; ConfigError when network and loss do not match."""
    from voxelflow.losses.generative import VAELoss
    from voxelflow.networks.generative import Autoencoder, VariationalAutoencoder

    variational = isinstance(loss, VAELoss)
    if (
        isinstance(network, Autoencoder)
        and isinstance(network, VariationalAutoencoder) != variational
    ):
        name, loss_name = experiment.network.name, experiment.loss.name
        if variational:
            raise ConfigError(
                f"loss.name: expected a reconstruction loss (l1, l2, huber ...) for network "
                f"{name!r}, which has no latent variance, got 'vae'; use network: vae for a VAE"
            )
        raise ConfigError(
            f"loss.name: expected 'vae' (reconstruction + beta * KL) for network {name!r}, "
            f"got {loss_name!r}"
        )
    return variational


def reconstruction_of(output: object) -> torch.Tensor:
    """The reconstruction in a network output: a tensor, a VAE dict or a 3-tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("recon", "reconstruction"):
            if key in output:
                return output[key]
    if isinstance(output, Sequence) and len(output) == 3:
        return output[0]
    raise ShapeError(
        "autoencoder: expected the network to return a tensor or {'recon', 'mu', 'logvar'}, "
        f"got {type(output).__name__}"
    )
