"""Compose augmentations; the augmentation registry and ``build_augmentation``.

:class:`Compose` applies its transforms in order, except that each run of consecutive spatial
transforms is composed into ONE resampling. Samplers call :meth:`Compose.draw_spatial` to get the
composed draw of the leading spatial run and resample the patch region straight from the cache,
then apply the remaining transforms with :meth:`Compose.after_spatial`.

Example:
    >>> aug = build_augmentation([{"name": "flip"}, {"name": "affine", "rotation": 15}])
    >>> [type(t).__name__ for t in aug.transforms]
    ['RandomFlip', 'RandomAffine']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from voxelflow.registry import Registry
from voxelflow.transforms import intensity, spatial
from voxelflow.transforms.base import Sample, SpatialTransform, Transform, to_sample
from voxelflow.transforms.resample import SpatialDraw, resample_sample

AUGMENTATIONS: Registry[type[Transform]] = Registry("augmentation")

for _name, _cls in {
    "flip": spatial.RandomFlip,
    "affine": spatial.RandomAffine,
    "elastic": spatial.RandomElastic,
    "gaussian_noise": intensity.RandomGaussianNoise,
    "rician_noise": intensity.RandomRicianNoise,
    "bias_field": intensity.RandomBiasField,
    "gamma": intensity.RandomGamma,
    "contrast_brightness": intensity.RandomContrastBrightness,
    "gaussian_blur": intensity.RandomGaussianBlur,
    "sharpen": intensity.RandomSharpen,
    "low_resolution": intensity.RandomLowResolution,
    "ghosting": intensity.RandomGhosting,
    "spike": intensity.RandomSpike,
    "motion": intensity.RandomMotion,
}.items():
    AUGMENTATIONS.add(_name, _cls)


class Compose(Transform):
    """Transforms applied in order; consecutive spatial transforms share one resampling.

    Args:
        transforms: the transforms.
        seed: seed of the generator used when ``__call__`` gets no ``rng``.

    Shape:
        a tensor ``(C, *spatial)`` (or each image of an Image or Subject) in, the same shape out.

    Example:
        >>> import torch
        >>> from voxelflow.transforms.intensity import RandomGaussianNoise
        >>> from voxelflow.transforms.spatial import RandomFlip
        >>> compose = Compose([RandomFlip(axes=(0,), flip_probability=1.0), RandomGaussianNoise(p=0.0)])
        >>> compose(torch.arange(3.0).view(1, 3, 1)).flatten()
        tensor([2., 1., 0.])
    """

    def __init__(self, transforms: Sequence[Transform], *, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.transforms = list(transforms)

    def _leading_spatial(self) -> int:
        count = 0
        for transform in self.transforms:
            if not isinstance(transform, SpatialTransform):
                break
            count += 1
        return count

    @property
    def interpolation(self) -> str:
        """Image interpolation of the spatial part (cubic if any asks for it)."""
        spatial_part = [t for t in self.transforms if isinstance(t, SpatialTransform)]
        return "cubic" if any(t.interpolation == "cubic" for t in spatial_part) else "linear"

    def draw_spatial(
        self, rng: np.random.Generator, *, window: Sequence[int], spacing: Sequence[float]
    ) -> SpatialDraw | None:
        """Compose the draws of the leading spatial transforms (``None`` when nothing moves)."""
        leading = self.transforms[: self._leading_spatial()]
        spatial = [t for t in leading if isinstance(t, SpatialTransform)]  # all are; for the type
        return compose_draws(spatial, rng, window=window, spacing=spacing)

    def after_spatial(self, data: Any, rng: np.random.Generator) -> Any:
        """Apply the transforms that follow the leading spatial run."""
        return Compose(self.transforms[self._leading_spatial() :])(data, rng=rng)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"rng": rng}

    def apply(self, sample: Sample, params: dict[str, Any]) -> Sample:
        rng = params["rng"]
        index = 0
        while index < len(self.transforms):
            run: list[SpatialTransform] = []
            while index < len(self.transforms) and isinstance(
                spatial := self.transforms[index], SpatialTransform
            ):
                run.append(spatial)
                index += 1
            if run:
                sample = _resample_run(sample, run, rng)
                continue
            transform = self.transforms[index]
            drawn = transform.maybe_params(rng)
            if drawn is not None:
                sample = transform.apply(sample, drawn)
            index += 1
        return sample

    def __call__(
        self,
        data: Any,
        *,
        rng: np.random.Generator | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        sample, rebuild = to_sample(data)
        return rebuild(self.apply(sample, params or {"rng": rng if rng is not None else self.rng}))

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def compose_draws(
    transforms: Iterable[SpatialTransform],
    rng: np.random.Generator,
    *,
    window: Sequence[int],
    spacing: Sequence[float],
) -> SpatialDraw | None:
    """One draw from a sequence of spatial transforms applied in order (``None`` if identity)."""
    total: SpatialDraw | None = None
    for transform in transforms:
        params = transform.maybe_params(rng)
        if params is None:
            continue
        draw = transform.to_draw(params, window=window, spacing=spacing)
        total = draw if total is None else total.then(draw)
    return None if total is None or total.is_identity() else total


def _resample_run(sample: Sample, run: list[SpatialTransform], rng: np.random.Generator) -> Sample:
    window = max((t.shape[1:] for t in sample.tensors.values()), key=lambda s: int(np.prod(s)))
    draw = compose_draws(run, rng, window=window, spacing=sample.spacing)
    if draw is None:
        return sample
    roles = sorted({r for t in run for r in t.selected(sample)})
    cubic = any(t.interpolation == "cubic" for t in run)
    return resample_sample(sample, draw, roles=roles, interpolation="cubic" if cubic else "linear")


def build_augmentation(
    components: Sequence[Any] | None, *, seed: int | None = None
) -> Compose | None:
    """Build a :class:`Compose` from components (``{"name": ..., **kwargs}`` dicts or config
    ``Component`` objects with ``.name`` and ``.kwargs``).

    Raises:
        ConfigError: unknown name (with suggestions) or bad options, naming the key
            (``augmentation[1].rotation: ...``); built by :mod:`voxelflow.config.build`.

    Example:
        >>> import torch
        >>> components = [{"name": "flip", "axes": [0]}, {"name": "gaussian_noise"}]
        >>> augment = build_augmentation(components, seed=0)
        >>> augment(torch.zeros(1, 8, 8, 4)).shape
        torch.Size([1, 8, 8, 4])
        >>> build_augmentation([]) is None
        True
    """
    if not components:
        return None
    from voxelflow.config.build import build_augmentations

    transforms = build_augmentations(components)
    return Compose(transforms, seed=seed)
