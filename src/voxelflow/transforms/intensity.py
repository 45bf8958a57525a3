"""Intensity augmentation: noise, bias field, gamma, contrast/brightness, blur, sharpen,
simulated low resolution and MRI artefacts (ghosting, spike).

Each effect is a small class: ``make_params(rng)`` draws, ``apply_tensor(tensor, params)``
applies. A scalar parameter is fixed; ``[low, high]`` is sampled uniformly. ``p`` is the chance
of applying. Only ``intensity`` roles change unless ``include`` says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.transforms.base import IntensityTransform, range_of

Range = float | Sequence[float]


def _draw(rng: np.random.Generator, value: tuple[float, float]) -> float:
    return float(rng.uniform(*value)) if value[0] != value[1] else value[0]


def gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    """Normalised Gaussian kernel of radius ``ceil(3 sigma)``."""
    radius = max(math.ceil(3.0 * sigma), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(tensor: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, *spatial)`` (sigma in voxels per axis, reflect padding)."""
    dims = tensor.ndim - 1
    out = tensor[:, None]
    for axis, s in enumerate(sigma):
        if s <= 0:
            continue
        kernel = gaussian_kernel_1d(float(s)).to(tensor)
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = kernel.numel() // 2
        conv = F.conv3d if dims == 3 else F.conv2d
        out = conv(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out[:, 0]


class RandomGaussianNoise(IntensityTransform):
    """Add Gaussian noise: ``x + N(mean, std)``; ``std`` fixed or ``[low, high]``.

    Args:
        mean: mean of the noise, in image intensity units; fixed or ``[low, high]``.
        std: standard deviation of the noise, in image intensity units; fixed or ``[low, high]``.
    """

    def __init__(self, *, mean: Range = 0.0, std: Range = (0.0, 0.1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = range_of(mean, name="mean", symmetric=False)
        self.std = range_of(std, name="std", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "mean": _draw(rng, self.mean),
            "std": _draw(rng, self.std),
            "seed": int(rng.integers(2**31)),
        }

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(params["seed"])
        noise = torch.randn(tensor.shape, generator=generator).to(tensor)
        return tensor + noise * params["std"] + params["mean"]


class RandomRicianNoise(RandomGaussianNoise):
    """Rician noise (magnitude MRI): ``sqrt((x + n1)² + n2²)`` with Gaussian ``n1, n2``."""

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(params["seed"])
        noise = (
            torch.randn((2, *tensor.shape), generator=generator).to(tensor) * params["std"]
            + params["mean"]
        )
        return torch.sqrt((tensor + noise[0]) ** 2 + noise[1] ** 2)


class RandomBiasField(IntensityTransform):
    """Multiply by ``exp(polynomial)`` of degree ``order`` over normalised coordinates.

    Args:
        coefficients: range of each polynomial coefficient; ``d`` → ``(-d, d)``.
        order: polynomial degree.
    """

    def __init__(self, *, coefficients: Range = 0.5, order: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coefficients = range_of(coefficients, name="coefficients")
        self.order = int(order)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        count = (self.order + 1) ** 3
        return {"coefficients": [float(rng.uniform(*self.coefficients)) for _ in range(count)]}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        spatial = tensor.shape[1:]
        axes = [torch.linspace(-1, 1, n, dtype=tensor.dtype) for n in spatial]
        grids = torch.meshgrid(*axes, indexing="ij")
        field = torch.zeros(spatial, dtype=tensor.dtype)
        powers = [
            (i, j, k)
            for i in range(self.order + 1)
            for j in range(self.order + 1)
            for k in range(self.order + 1)
        ]
        for (i, j, k), c in zip(powers, params["coefficients"]):
            if i + j + k > self.order or (len(spatial) == 2 and k > 0):
                continue
            term = grids[0] ** i * grids[1] ** j
            field += c * (term * grids[2] ** k if len(spatial) == 3 else term)
        return tensor * torch.exp(field)


class RandomGamma(IntensityTransform):
    """Gamma on the min–max normalised image: ``x' = min + (max - min) · u^γ``, ``γ = exp(log_gamma)``.

    Args:
        log_gamma: ``d`` → ``(-d, d)``; ``[low, high]`` sampled.
    """

    def __init__(self, *, log_gamma: Range = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_gamma = range_of(log_gamma, name="log_gamma")

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"gamma": math.exp(_draw(rng, self.log_gamma))}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        low, high = tensor.min(), tensor.max()
        span = (high - low).clamp_min(1e-8)
        return low + span * ((tensor - low) / span) ** params["gamma"]


class RandomContrastBrightness(IntensityTransform):
    """``x' = (x - mean) · contrast + mean + brightness``.

    Args:
        contrast: factor, fixed or ``[low, high]``.
        brightness: shift; ``d`` → ``(-d, d)``.
    """

    def __init__(
        self, *, contrast: Range = (0.75, 1.25), brightness: Range = 0.1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.contrast = range_of(contrast, name="contrast", symmetric=False)
        self.brightness = range_of(brightness, name="brightness")

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"contrast": _draw(rng, self.contrast), "brightness": _draw(rng, self.brightness)}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        mean = tensor.mean()
        return (tensor - mean) * params["contrast"] + mean + params["brightness"]


class RandomGaussianBlur(IntensityTransform):
    """Gaussian blur with ``sigma`` in voxels (fixed or ``[low, high]``, same for all axes).

    Args:
        sigma: standard deviation of the Gaussian kernel in voxels; fixed or ``[low, high]``.
    """

    def __init__(self, *, sigma: Range = (0.5, 1.0), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sigma = range_of(sigma, name="sigma", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"sigma": _draw(rng, self.sigma)}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return gaussian_blur(tensor, [params["sigma"]] * (tensor.ndim - 1))


class RandomSharpen(RandomGaussianBlur):
    """Unsharp masking: ``x + amount · (x - blur(x))``.

    Args:
        sigma: blur of the unsharp mask in voxels; fixed or ``[low, high]``.
        amount: weight of the detail ``x - blur(x)`` added back; fixed or ``[low, high]``.
    """

    def __init__(self, *, sigma: Range = 1.0, amount: Range = (0.5, 1.5), **kwargs: Any) -> None:
        super().__init__(sigma=sigma, **kwargs)
        self.amount = range_of(amount, name="amount", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {**super().make_params(rng), "amount": _draw(rng, self.amount)}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return tensor + params["amount"] * (tensor - super().apply_tensor(tensor, params))


class RandomLowResolution(IntensityTransform):
    """Simulate a coarser acquisition: downsample by ``factor`` (area) then upsample (linear).

    Args:
        factor: downsampling factor per axis (1 = unchanged); fixed or ``[low, high]``.
    """

    def __init__(self, *, factor: Range = (1.0, 2.0), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = range_of(factor, name="factor", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"factor": _draw(rng, self.factor)}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        spatial = tuple(tensor.shape[1:])
        small = tuple(max(round(n / params["factor"]), 1) for n in spatial)
        mode = "trilinear" if len(spatial) == 3 else "bilinear"
        low = F.interpolate(tensor[None], size=small, mode="area")
        return F.interpolate(low, size=spatial, mode=mode, align_corners=False)[0]


class RandomGhosting(IntensityTransform):
    """MRI ghosting: scale every ``num_ghosts``-th k-space plane along ``axis`` by ``1 - intensity``.

    Args:
        num_ghosts: spacing of the scaled k-space planes (every n-th plane).
        intensity: how much those planes are attenuated (0 none, 1 removed); fixed or
            ``[low, high]``.
        axis: the spatial axis (0, 1 or 2) along which the planes are taken.
    """

    def __init__(
        self, *, num_ghosts: int = 4, intensity: Range = (0.3, 0.7), axis: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_ghosts, self.axis = int(num_ghosts), int(axis)
        self.intensity = range_of(intensity, name="intensity", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"intensity": _draw(rng, self.intensity)}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        dims = tuple(range(1, tensor.ndim))
        spectrum = torch.fft.fftn(tensor, dim=dims)
        size = tensor.shape[1 + self.axis]
        mask = torch.ones(size)
        mask[:: max(self.num_ghosts, 1)] = 1.0 - params["intensity"]
        mask[0] = 1.0  # keep the mean intensity
        shape = [1] * tensor.ndim
        shape[1 + self.axis] = size
        return torch.fft.ifftn(spectrum * mask.view(shape), dim=dims).real.to(tensor.dtype)


class RandomSpike(IntensityTransform):
    """MRI spike (herringbone): add a k-space spike at a random frequency.

    Args:
        intensity: height of the spike as a fraction of the spectrum's peak magnitude; fixed
            or ``[low, high]``.
    """

    def __init__(self, *, intensity: Range = (0.1, 0.3), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.intensity = range_of(intensity, name="intensity", symmetric=False)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "intensity": _draw(rng, self.intensity),
            "position": rng.uniform(-0.5, 0.5, size=3).tolist(),
        }

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        dims = tuple(range(1, tensor.ndim))
        spectrum = torch.fft.fftn(tensor, dim=dims)
        index = tuple(int(p * n) % n for p, n in zip(params["position"], tensor.shape[1:]))
        peak = spectrum.abs().flatten(1).amax(dim=1)
        spectrum[(slice(None), *index)] += peak * params["intensity"]
        return torch.fft.ifftn(spectrum, dim=dims).real.to(tensor.dtype)


class RandomMotion(IntensityTransform):
    """MRI motion artefact from random translations between k-space segments.

    k-space is filled in ``num_segments`` blocks along ``axis``, each from the image shifted by a
    random translation (a Fourier phase ramp); the central block is unmoved.

    Args:
        translation: shift per segment in voxels; ``d`` → ``(-d, d)``.
        num_segments: number of k-space blocks (movements) along ``axis``.
        axis: phase-encoding axis.
    """

    def __init__(
        self, *, translation: Range = 3.0, num_segments: int = 3, axis: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.translation = range_of(translation, name="translation")
        self.num_segments, self.axis = max(int(num_segments), 1), int(axis)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        shifts = rng.uniform(*self.translation, size=(self.num_segments, 3))
        shifts[self.num_segments // 2] = 0.0  # the centre of k-space is acquired unmoved
        return {"shifts": shifts.tolist()}

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        dims = tuple(range(1, tensor.ndim))
        spectrum = torch.fft.fftshift(torch.fft.fftn(tensor, dim=dims), dim=dims)
        size = tensor.shape[1 + self.axis]
        bounds = np.linspace(0, size, self.num_segments + 1).round().astype(int)
        frequencies = [torch.fft.fftshift(torch.fft.fftfreq(n)) for n in tensor.shape[1:]]
        out = torch.empty_like(spectrum)
        for segment, shift in enumerate(params["shifts"]):
            phase = torch.zeros(tensor.shape[1:])
            for axis, freq in enumerate(frequencies):
                view = [1] * len(frequencies)
                view[axis] = -1
                phase = phase + freq.view(view) * shift[axis]
            index = [slice(None)] * tensor.ndim
            index[1 + self.axis] = slice(bounds[segment], bounds[segment + 1])
            ramp = torch.exp(-2j * math.pi * phase)[tuple(index[1:])]
            out[tuple(index)] = spectrum[tuple(index)] * ramp
        result = torch.fft.ifftn(torch.fft.ifftshift(out, dim=dims), dim=dims)
        return result.real.to(tensor.dtype)
