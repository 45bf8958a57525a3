"""Sampled inference: flip test-time augmentation, Monte-Carlo dropout and uncertainty maps.

An inference *sample* is one full prediction under one flip of the in-plane spatial axes
(``inference.flip_tta``) and/or one Monte-Carlo dropout pass (``inference.mc_samples``, the
dropout layers active, everything else in evaluation mode). From the softmax ``p_s`` of the
samples, :class:`SoftmaxMoments` keeps the running mean and mean of squares and
:func:`uncertainty_map` turns them into:

* ``entropy``: predictive entropy of the mean softmax, ``-Σ_k p̄_k ln p̄_k`` (nats) per voxel;
* ``variance``: mean over classes of the per-class variance of the softmax across samples
  (population variance, ``ddof=0``).

Example:
    >>> moments = SoftmaxMoments()
    >>> moments.add(torch.tensor([[1.0, 0.0]]).T); moments.add(torch.tensor([[0.0, 1.0]]).T)
    >>> moments.uncertainty("variance").flatten().tolist()
    [0.25]
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.config.schema import InferenceConfig

UNCERTAINTIES = ("none", "entropy", "variance")


def flip_combinations(spatial_dims: int, *, skip: int | None = None) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes (as tensor dims of ``(B, C, *spatial)``), no flip first.

    Args:
        spatial_dims: number of spatial axes.
        skip: a spatial axis never flipped (the slice axis: flipping one voxel changes nothing).
    """
    axes = [2 + axis for axis in range(spatial_dims) if axis != skip]
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def uncertainty_map(
    mean: torch.Tensor, mean_of_squares: torch.Tensor, kind: str, *, class_dim: int = 0
) -> torch.Tensor:
    """Voxel-wise uncertainty from the sample moments of the softmax.

    Args:
        mean: mean softmax over the samples ``p̄``.
        mean_of_squares: mean of the squared softmax over the samples.
        kind: ``entropy`` (``-Σ_k p̄_k ln p̄_k``, nats) or ``variance`` (mean over classes of
            ``E[p²] - E[p]²``, the population variance across samples).
        class_dim: the class axis.

    Raises:
        ConfigError: an unknown ``kind``.

    Shape:
        ``(K, *spatial)`` → ``(1, *spatial)`` (class axis ``class_dim``, kept with size 1)
    """
    if kind == "entropy":
        return -torch.special.xlogy(mean, mean).sum(dim=class_dim, keepdim=True)
    if kind == "variance":
        variance = (mean_of_squares - mean.square()).clamp_min(0.0)
        return variance.mean(dim=class_dim, keepdim=True)
    raise ConfigError(f"inference.uncertainty: expected one of {list(UNCERTAINTIES)}, got {kind!r}")


def dropout_layers(network: nn.Module) -> list[nn.Module]:
    """Dropout modules of ``network`` with a probability above 0 (Monte-Carlo dropout)."""
    return [
        m for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    ]


@contextlib.contextmanager
def active_dropout(network: nn.Module) -> Iterator[None]:
    """Put only the dropout layers in training mode (norm layers keep their statistics)."""
    layers = [(m, m.training) for m in dropout_layers(network)]
    for module, _ in layers:
        module.train()
    try:
        yield
    finally:
        for module, mode in layers:
            module.train(mode)


def check_inference_options(options: InferenceConfig, network: nn.Module) -> None:
    """Refuse uncertainty without samples and Monte-Carlo dropout without dropout layers.

    Raises:
        ConfigError: naming ``inference.uncertainty`` or ``inference.mc_samples``.
    """
    mc_samples = int(getattr(options, "mc_samples", 0) or 0)
    uncertainty = getattr(options, "uncertainty", "none")
    if mc_samples == 1 or mc_samples < 0:
        raise ConfigError(f"inference.mc_samples: expected 0 (off) or at least 2, got {mc_samples}")
    if mc_samples and not dropout_layers(network):
        raise ConfigError(
            f"inference.mc_samples: expected a network with dropout (e.g. network.dropout: 0.2), "
            f"got {type(network).__name__} without dropout layers"
        )
    if uncertainty != "none" and not (options.flip_tta or mc_samples):
        raise ConfigError(
            f"inference.uncertainty: {uncertainty!r} needs samples: expected inference.flip_tta: "
            "true or inference.mc_samples >= 2, got neither"
        )


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block (Monte-Carlo dropout masks), restoring them after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class SoftmaxMoments:
    """Running mean (and mean of squares) of softmax samples: one or two volumes, any count.

    Args:
        class_dim: the class axis of the added tensors.
        squares: also keep the mean of squares (needed by ``variance`` only).

    Shape:
        :meth:`add` takes ``(..., K, *spatial)``; :meth:`mean` returns the same shape and
        :meth:`uncertainty` ``(..., 1, *spatial)``.
    """

    def __init__(self, *, class_dim: int = 0, squares: bool = True) -> None:
        self.class_dim, self.keep_squares = class_dim, squares
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None
        self.count = 0

    def add(self, probabilities: torch.Tensor) -> None:
        """Add one sample's softmax."""
        if self.total is None:
            self.total = probabilities.clone()
            self.squares = probabilities.square() if self.keep_squares else None
        else:
            self.total.add_(probabilities)
            if self.squares is not None:
                self.squares.addcmul_(probabilities, probabilities)
        self.count += 1

    def mean(self) -> torch.Tensor:
        """Mean softmax over the samples."""
        if self.total is None:
            raise ConfigError("expected at least one inference sample, got none")
        return self.total / self.count

    def uncertainty(self, kind: str) -> torch.Tensor:
        """The ``entropy`` or ``variance`` map (see :func:`uncertainty_map`).

        Raises:
            ConfigError: ``variance`` asked of moments built with ``squares=False``.
        """
        mean = self.mean()
        if self.squares is None:
            if kind == "variance":
                raise ConfigError("variance: expected moments kept with squares=True, got none")
            return uncertainty_map(mean, mean, kind, class_dim=self.class_dim)
        return uncertainty_map(mean, self.squares / self.count, kind, class_dim=self.class_dim)
