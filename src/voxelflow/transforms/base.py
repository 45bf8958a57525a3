"""The transform protocol: parameters drawn in ``make_params``, applied in ``apply``.

Every random transform separates drawing from applying: ``make_params(rng)`` returns a small
dict of plain values, ``apply(sample, params)`` is deterministic. Replay, batching on a GPU and
tests with fixed parameters follow. A transform accepts a tensor ``(C, *spatial)``, an
:class:`~voxelflow.io.image.Image`, a :class:`~voxelflow.io.image.Subject` or a window dict
(role → tensor, plus ``"subject"``, ``"location"`` and optionally ``"kinds"`` and ``"spacing"``,
as the samplers yield) and returns the same type.

Hierarchy (no deeper): ``Transform`` → ``SpatialTransform`` | ``IntensityTransform`` → concrete.

Example:
    >>> from voxelflow.transforms.intensity import RandomGamma
    >>> out = RandomGamma(log_gamma=0.3, seed=0)(torch.rand(1, 8, 8, 8))
    >>> out.shape
    torch.Size([1, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.io.image import Image, Subject

if TYPE_CHECKING:
    from voxelflow.transforms.resample import SpatialDraw

META_KEYS = frozenset({"subject", "location", "kinds", "spacing"})


@dataclass
class Sample:
    """What a transform works on: role → tensor ``(C, *spatial)`` with kinds and spacing."""

    tensors: dict[str, torch.Tensor]
    kinds: dict[str, str]
    spacing: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes."""
        return next(iter(self.tensors.values())).ndim - 1

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> Sample:
        """Copy with some tensors replaced (no data copied)."""
        return replace(self, tensors={**self.tensors, **tensors})


def range_of(
    value: float | Sequence[float], *, name: str, symmetric: bool = True, around: float = 0.0
) -> tuple[float, float]:
    """Normalise a parameter: ``d`` → ``(around - d, around + d)``; ``[low, high]`` as given.

    Args:
        value: a number or a ``[low, high]`` pair.
        name: parameter name for errors.
        symmetric: whether a single number means a symmetric range (else it is fixed).
        around: centre of the symmetric range.

    Raises:
        ConfigError: not a number or a pair with ``low <= high``.
    """
    if isinstance(value, (int, float)):
        d = float(value)
        return (around - abs(d), around + abs(d)) if symmetric else (d, d)
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ConfigError(
            f"expected {name} as a number or [low, high] with low <= high, got {value!r}"
        )
    return pair


def kind_of(tensor: torch.Tensor) -> str:
    """Kind guessed from the dtype when none is given: integer → label, else intensity."""
    return "intensity" if tensor.is_floating_point() else "label"


class Transform:
    """Base class: probability ``p``, role selection and container handling.

    Args:
        p: probability of applying the transform to a sample (``0 <= p <= 1``).
        include: roles to transform (default: all roles the transform handles).
        exclude: roles to leave untouched.
        seed: seed of the transform's own generator, used when ``__call__`` gets no ``rng``.

    Raises:
        ConfigError: ``p`` outside ``[0, 1]``.
    """

    #: kinds handled when ``include`` is not given
    kinds: tuple[str, ...] = ("intensity", "label", "weight")

    def __init__(
        self,
        *,
        p: float = 1.0,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"expected p in [0, 1] for {type(self).__name__}, got {p!r}")
        self.p = float(p)
        self.include = tuple(include) if include is not None else None
        self.exclude = tuple(exclude or ())
        self.rng = np.random.default_rng(seed)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw this transform's random parameters."""
        return {}

    def maybe_params(self, rng: np.random.Generator) -> dict[str, Any] | None:
        """``None`` when the draw with probability ``1 - p`` skips the transform, else params."""
        if self.p < 1.0 and rng.random() >= self.p:
            return None
        return self.make_params(rng)

    def apply(self, sample: Sample, params: dict[str, Any]) -> Sample:
        """Apply with fixed parameters (deterministic)."""
        raise NotImplementedError

    def selected(self, sample: Sample) -> list[str]:
        """Roles this transform changes in ``sample``."""
        roles = (
            self.include
            if self.include is not None
            else [r for r in sample.tensors if sample.kinds[r] in self.kinds]
        )
        return [r for r in roles if r in sample.tensors and r not in self.exclude]

    def __call__(
        self,
        data: Any,
        *,
        rng: np.random.Generator | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Draw parameters (unless given) and apply them to a tensor, Image, Subject or dict."""
        if params is None:
            params = self.maybe_params(rng if rng is not None else self.rng)
            if params is None:
                return data
        sample, rebuild = to_sample(data)
        return rebuild(self.apply(sample, params))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class SpatialTransform(Transform):
    """A transform that moves voxels; all spatial transforms of a draw share one resampling.

    Subclasses implement ``make_params`` and ``to_draw``; ``apply`` resamples every role inside
    its own window (images linear or cubic, labels nearest, weights linear). Samplers instead
    compose the draws and resample the patch region straight from the cached volume.

    Args:
        interpolation: for intensity images, ``"linear"`` or ``"cubic"``.
    """

    def __init__(self, *, interpolation: str = "linear", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if interpolation not in ("linear", "cubic"):
            raise ConfigError(f"expected interpolation 'linear' or 'cubic', got {interpolation!r}")
        self.interpolation = interpolation

    def to_draw(
        self, params: dict[str, Any], *, window: Sequence[int], spacing: Sequence[float]
    ) -> SpatialDraw:
        """The physical-space :class:`~voxelflow.transforms.resample.SpatialDraw` of ``params``."""
        raise NotImplementedError

    def apply(self, sample: Sample, params: dict[str, Any]) -> Sample:
        from voxelflow.transforms.resample import resample_sample

        window = max((t.shape[1:] for t in sample.tensors.values()), key=lambda s: int(np.prod(s)))
        draw = self.to_draw(params, window=window, spacing=sample.spacing)
        return resample_sample(
            sample, draw, roles=self.selected(sample), interpolation=self.interpolation
        )


class IntensityTransform(Transform):
    """A transform of intensity images only (labels and weights untouched by default).

    Subclasses implement ``make_params`` and ``apply_tensor(tensor, params)``.
    """

    kinds = ("intensity",)

    def apply_tensor(self, tensor: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Transform one float tensor ``(C, *spatial)`` with fixed parameters."""
        raise NotImplementedError

    def apply(self, sample: Sample, params: dict[str, Any]) -> Sample:
        changed = {}
        for role in self.selected(sample):
            tensor = sample.tensors[role]
            if not tensor.is_floating_point():
                tensor = tensor.float()
            changed[role] = self.apply_tensor(tensor, params)
        return sample.with_tensors(changed)


def to_sample(data: object) -> tuple[Sample, Callable[[Sample], Any]]:
    """Wrap ``data`` as a :class:`Sample`; returns it and a function rebuilding the input type.

    Raises:
        ShapeError: an object that is none of tensor, Image, Subject or window dict.
    """
    if isinstance(data, torch.Tensor):
        sample = Sample({"image": data}, {"image": kind_of(data)}, (1.0,) * (data.ndim - 1))
        return sample, lambda s: s.tensors["image"]
    if isinstance(data, Image):
        sample = Sample({"image": data.data}, {"image": data.kind}, tuple(data.spacing))
        return sample, lambda s: data.with_data(s.tensors["image"])
    if isinstance(data, Subject):
        first = next(iter(data.images.values()))
        sample = Sample(
            {r: i.data for r, i in data.images.items()},
            {r: i.kind for r, i in data.images.items()},
            tuple(first.spacing),
        )
        return sample, lambda s: data.with_images(
            {r: data.images[r].with_data(t) for r, t in s.tensors.items()}
        )
    if isinstance(data, dict):
        return _dict_sample(data)
    raise ShapeError(
        f"expected a tensor (C, *spatial), Image, Subject or window dict, got {type(data).__name__}"
    )


def _dict_sample(data: dict[str, Any]) -> tuple[Sample, Callable[[Sample], dict[str, Any]]]:
    tensors = {k: v for k, v in data.items() if k not in META_KEYS and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ShapeError(
            f"expected a window dict with at least one role tensor, got keys {sorted(data)}"
        )
    given = data.get("kinds") or {}
    kinds = {role: given.get(role, kind_of(t)) for role, t in tensors.items()}
    dims = next(iter(tensors.values())).ndim - 1
    spacing = data.get("spacing")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * dims
    sample = Sample(tensors, kinds, spacing)
    return sample, lambda s: {**data, **s.tensors}
