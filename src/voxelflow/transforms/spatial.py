"""Spatial augmentation: flips, affine (rotation, scaling, shear, translation) and elastic.

Each transform draws its parameters in ``make_params`` and turns them into a physical-space
:class:`~voxelflow.transforms.resample.SpatialDraw` in ``to_draw``. A
:class:`~voxelflow.transforms.compose.Compose` (or a sampler) multiplies the draws of one sample
into ONE resampling, computed only over the patch region: the sampler crops the patch plus the
margin the draw needs straight from the cached volume, so a rotated patch has no empty corners
inside the image.

Ranges: for rotation, shear and translation a single number ``d`` means ``(-d, d)`` (as in
NiftyNet and MONAI) and ``[low, high]`` is sampled uniformly; either may also be given per axis
as a list of such. Scaling ``s`` means ``(1 - s, 1 + s)``; ``[low, high]`` is a factor range.
Angles in degrees, distances in mm. Images are interpolated linearly (or cubic), labels by
nearest neighbour, weight maps linearly; one draw is shared by all images of a sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError
from voxelflow.transforms.base import SpatialTransform, range_of
from voxelflow.transforms.resample import SpatialDraw

Range = float | Sequence[float]


def _per_axis(
    value: Range | Sequence[Range],
    dims: int,
    *,
    name: str,
    symmetric: bool = True,
    around: float = 0.0,
) -> list[tuple[float, float]]:
    """A range per axis from a number, a ``[low, high]`` pair, or a list of ``dims`` numbers/pairs.

    Raises:
        ConfigError: a list of the wrong length.
    """
    if isinstance(value, (int, float)) or (
        len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    ):
        items: list[Range] = [cast(Range, value)] * dims  # a number or a [low, high] pair
    elif len(value) == dims:
        items = list(value)
    else:
        raise ConfigError(
            f"expected {name} as d, [low, high] or {dims} of these (one per axis), got {value!r}"
        )
    return [range_of(v, name=name, symmetric=symmetric, around=around) for v in items]


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about each axis in turn (3D: axes 0, 1, 2; 2D: one angle)."""
    radians = [math.radians(a) for a in angles_deg]
    if len(radians) == 1:
        c, s = math.cos(radians[0]), math.sin(radians[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(radians):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        matrix = rot @ matrix
    return matrix


class RandomFlip(SpatialTransform):
    """Flip chosen axes, each with probability ``flip_probability``.

    Args:
        axes: spatial axes that may flip (indices into ``(X, Y[, Z])``).
        flip_probability: chance of flipping each axis independently.
        **kwargs: ``p``, ``include``, ``exclude``, ``seed`` of :class:`Transform`.

    Example:
        >>> RandomFlip(axes=(0,), flip_probability=1.0)(torch.arange(3.0).view(1, 3, 1)).flatten()
        tensor([2., 1., 0.])
    """

    def __init__(
        self, *, axes: Sequence[int] = (0, 1, 2), flip_probability: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= flip_probability <= 1.0:
            raise ConfigError(f"expected flip_probability in [0, 1], got {flip_probability!r}")
        self.axes = tuple(int(a) for a in axes)
        self.flip_probability = float(flip_probability)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"flip": [a for a in self.axes if rng.random() < self.flip_probability]}

    def to_draw(
        self, params: dict[str, Any], *, window: Sequence[int], spacing: Sequence[float]
    ) -> SpatialDraw:
        dims = len(window)
        signs = np.ones(dims)
        for axis in params["flip"]:
            if axis >= dims:
                raise ConfigError(
                    f"expected flip axes below {dims} for a {dims}D window, got axis {axis}"
                )
            signs[axis] = -1.0
        return SpatialDraw(np.diag(signs), np.zeros(dims))


class RandomAffine(SpatialTransform):
    """Random rotation, scaling, shear and translation composed into one affine map.

    Args:
        rotation: degrees; ``d`` → ``(-d, d)``, ``[low, high]``, or one of these per axis
            (3D: three axes; 2D: one in-plane angle).
        scaling: factor; ``s`` → ``(1 - s, 1 + s)``, ``[low, high]``, or per axis.
        isotropic: one scaling factor for all axes (else drawn per axis).
        shear: shear factor (tangent); ``d`` → ``(-d, d)`` or ``[low, high]``, per axis pair.
        translation: mm; ``d`` → ``(-d, d)`` or ``[low, high]``, or per axis.
        spatial_dims: 3 for volumes, 2 for 2D images (sets how many angles and axes are drawn).
        **kwargs: ``p``, ``interpolation``, ``include``, ``exclude``, ``seed``.

    A factor above 1 enlarges the content (zoom in).
    """

    def __init__(
        self,
        *,
        rotation: Range | Sequence[Range] = 0.0,
        scaling: Range | Sequence[Range] = 0.0,
        isotropic: bool = True,
        shear: Range = 0.0,
        translation: Range | Sequence[Range] = 0.0,
        spatial_dims: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        dims = int(spatial_dims)
        self.spatial_dims = dims
        self.rotation = _per_axis(rotation, 1 if dims == 2 else 3, name="rotation")
        self.scaling = _per_axis(scaling, dims, name="scaling", around=1.0)
        if any(low <= 0 for low, _ in self.scaling):
            raise ConfigError(f"expected scaling factors > 0, got {scaling!r}")
        self.isotropic = bool(isotropic)
        self.shear = range_of(shear, name="shear")
        self.translation = _per_axis(translation, dims, name="translation")

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        dims = self.spatial_dims
        scales = [rng.uniform(low, high) for low, high in self.scaling]
        if self.isotropic:
            scales = [scales[0]] * dims
        pairs = dims * (dims - 1)
        return {
            "rotation": [rng.uniform(low, high) for low, high in self.rotation],
            "scaling": scales,
            "shear": [rng.uniform(*self.shear) for _ in range(pairs)],
            "translation": [rng.uniform(low, high) for low, high in self.translation],
        }

    def forward_matrix(self, params: dict[str, Any]) -> np.ndarray:
        """Source offset (mm) → output offset (mm): rotation · shear · scaling."""
        dims = len(params["scaling"])
        shear = np.eye(dims)
        off_diagonal = [(i, j) for i in range(dims) for j in range(dims) if i != j]
        for (i, j), value in zip(off_diagonal, params["shear"]):
            shear[i, j] = value
        return rotation_matrix(params["rotation"]) @ shear @ np.diag(params["scaling"])

    def to_draw(
        self, params: dict[str, Any], *, window: Sequence[int], spacing: Sequence[float]
    ) -> SpatialDraw:
        if len(params["scaling"]) != len(window):
            raise ConfigError(
                f"expected a {len(params['scaling'])}D window for RandomAffine(spatial_dims="
                f"{len(params['scaling'])}), got window {tuple(window)}"
            )
        inverse = np.linalg.inv(self.forward_matrix(params))
        return SpatialDraw(inverse, -inverse @ np.asarray(params["translation"], dtype=np.float64))


class RandomElastic(SpatialTransform):
    """Smooth random displacement field: cubic B-spline or Gaussian-smoothed noise.

    Args:
        control_points: control points per axis of the B-spline grid over the window (>= 4),
            or the coarse noise resolution for ``smoothing="gaussian"``.
        max_displacement: largest displacement in mm (per axis or one for all).
        smoothing: ``"bspline"`` (uniform coefficients in ±max, cubic B-spline) or
            ``"gaussian"`` (Gaussian noise smoothed with ``sigma`` control spacings, scaled so its
            largest value is ``max_displacement``).
        sigma: Gaussian smoothing in control spacings (``smoothing="gaussian"`` only).
        spatial_dims: 3 for volumes, 2 for 2D images.
        **kwargs: ``p``, ``interpolation``, ``include``, ``exclude``, ``seed``.
    """

    def __init__(
        self,
        *,
        control_points: int = 7,
        max_displacement: float | Sequence[float] = 5.0,
        smoothing: str = "bspline",
        sigma: float = 1.0,
        spatial_dims: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if control_points < 4:
            raise ConfigError(f"expected control_points >= 4, got {control_points!r}")
        if smoothing not in ("bspline", "gaussian"):
            raise ConfigError(f"expected smoothing 'bspline' or 'gaussian', got {smoothing!r}")
        self.control_points = int(control_points)
        self.spatial_dims = int(spatial_dims)
        maximum = np.broadcast_to(
            np.asarray(max_displacement, dtype=np.float64), (self.spatial_dims,)
        )
        self.max_displacement = maximum.copy()
        self.smoothing = smoothing
        self.sigma = float(sigma)

    def make_params(self, rng: np.random.Generator) -> dict[str, Any]:
        shape = (self.spatial_dims,) + (self.control_points,) * self.spatial_dims
        if self.smoothing == "bspline":
            coefficients = rng.uniform(-1.0, 1.0, size=shape) * self.max_displacement.reshape(
                -1, *[1] * self.spatial_dims
            )
        else:
            coefficients = _smoothed_noise(
                rng.normal(size=shape), self.sigma, self.max_displacement
            )
        return {"coefficients": coefficients.astype(np.float32)}

    def to_draw(
        self, params: dict[str, Any], *, window: Sequence[int], spacing: Sequence[float]
    ) -> SpatialDraw:
        coefficients = torch.as_tensor(params["coefficients"])
        dims = len(window)
        if self.smoothing == "bspline":
            field = coefficients
            for axis, size in enumerate(window):
                basis = bspline_basis(size, coefficients.shape[1 + axis])
                field = torch.tensordot(
                    field, basis, dims=([1], [1])
                )  # contracts one axis, appends
            displacement = field
        else:
            mode = "trilinear" if dims == 3 else "bilinear"
            displacement = F.interpolate(
                coefficients[None], size=tuple(window), mode=mode, align_corners=True
            )[0]
        return SpatialDraw(np.eye(dims), np.zeros(dims), displacement.contiguous())


def bspline_basis(size: int, control_points: int) -> torch.Tensor:
    """Cubic B-spline weights ``(size, control_points)`` spreading control points over ``size`` voxels."""
    positions = np.linspace(1.0, control_points - 2.0, size)  # keep the support inside the grid
    weights = np.zeros((size, control_points))
    for k in range(control_points):
        t = np.abs(positions - k)
        near = t < 1
        far = (t >= 1) & (t < 2)
        weights[near, k] = (4 - 6 * t[near] ** 2 + 3 * t[near] ** 3) / 6
        weights[far, k] = (2 - t[far]) ** 3 / 6
    return torch.from_numpy(weights.astype(np.float32))


def _smoothed_noise(noise: np.ndarray, sigma: float, maximum: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = np.empty_like(noise)
    for axis, component in enumerate(noise):
        smooth = gaussian_filter(component, sigma, mode="nearest")
        peak = np.abs(smooth).max()
        out[axis] = smooth / peak * maximum[axis] if peak > 0 else smooth
    return out
