"""Batched augmentation on the training device (GPU): one ``affine_grid``/``grid_sample`` per batch.

:class:`BatchAugmentation` takes a collated batch of windows (role → ``(B, C, *spatial)``), draws
parameters per sample with the same transforms (hence the same distributions) as the CPU worker
path, composes each sample's spatial draws into one matrix (plus elastic field), and resamples
all samples at once: one ``grid_sample`` for the intensity/weight roles (linear) and one for the
labels (nearest). Intensity transforms then run per sample on the device.

To avoid empty corners, let the sampler read a larger window (``window + 2 * margin``) and pass
``output_window``: the centre ``output_window`` is produced from the larger input.

Example:
    >>> from voxelflow.transforms.spatial import RandomFlip
    >>> gpu = BatchAugmentation([RandomFlip(axes=(0,), flip_probability=1.0)])
    >>> flipped = gpu({"image": torch.arange(8.0).view(1, 1, 4, 2)})["image"]
    >>> flipped[0, 0].round(decimals=3).tolist()  # linear resampling: exact up to rounding
    [[6.0, 7.0], [4.0, 5.0], [2.0, 3.0], [0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError
from voxelflow.transforms.base import META_KEYS, Sample, SpatialTransform, Transform, kind_of
from voxelflow.transforms.compose import Compose
from voxelflow.transforms.resample import SpatialDraw
from voxelflow.transforms.spatial import RandomAffine, RandomElastic, RandomFlip

Params = list[list[dict[str, Any] | None]]


class BatchAugmentation:
    """Per-sample random augmentation applied batched on the batch's device.

    Args:
        transforms: the transforms (a Compose's ``transforms`` or a list); spatial ones must
            come first (they are composed into one resampling).
        output_window: spatial size to produce (centre of the input); ``None`` = input size.
        seed: seed of the generator used when ``__call__`` gets no ``rng``.
        padding_mode: ``grid_sample`` padding outside the input window: ``"zeros"``, or
            ``"border"`` as the per-sample CPU path does (its read region is padded with the
            configured value, so both agree wherever the input window covers the source box).
    """

    def __init__(
        self,
        transforms: Compose | Sequence[Transform],
        *,
        output_window: Sequence[int] | None = None,
        seed: int | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        given = transforms.transforms if isinstance(transforms, Compose) else transforms
        self.transforms: list[Transform] = list(given)
        self.output_window = tuple(output_window) if output_window is not None else None
        self.rng = np.random.default_rng(seed)
        self.padding_mode = padding_mode

    def draw(self, batch_size: int, rng: np.random.Generator) -> Params:
        """Parameters per sample and transform (``None`` = skipped by ``p``)."""
        return [[t.maybe_params(rng) for t in self.transforms] for _ in range(batch_size)]

    def __call__(
        self, batch: dict[str, Any], *, rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """Draw and apply; returns a new batch dict (input tensors are not modified)."""
        roles = _roles(batch)
        size = next(iter(roles.values())).shape[0]
        return self.apply(batch, self.draw(size, rng if rng is not None else self.rng))

    def apply(self, batch: dict[str, Any], params: Params) -> dict[str, Any]:
        """Apply fixed per-sample parameters (deterministic)."""
        roles = _roles(batch)
        kinds = {r: (batch.get("kinds") or {}).get(r, kind_of(t)) for r, t in roles.items()}
        first = next(iter(roles.values()))
        dims = first.ndim - 2
        spacing = _spacing(batch, first.shape[0], dims)
        window = self.output_window or tuple(first.shape[2:])
        out = dict(batch)
        out.update(self._spatial(roles, kinds, params, window, spacing))
        out.update(self._intensity(out, kinds, params, spacing))
        return out

    def _spatial(
        self,
        roles: dict[str, torch.Tensor],
        kinds: dict[str, str],
        params: Params,
        window: Sequence[int],
        spacing: np.ndarray,
    ) -> dict[str, torch.Tensor]:
        spatial = [(i, t) for i, t in enumerate(self.transforms) if isinstance(t, SpatialTransform)]
        first = next(iter(roles.values()))
        draws: list[SpatialDraw | None] = []
        for b, sample_params in enumerate(params):
            total: SpatialDraw | None = None
            for i, transform in spatial:
                step = sample_params[i]
                if step is not None:
                    draw = transform.to_draw(step, window=window, spacing=spacing[b])
                    total = draw if total is None else total.then(draw)
            draws.append(total)
        if all(d is None for d in draws) and tuple(first.shape[2:]) == tuple(window):
            return {}
        # float64 coordinates: nearest (labels) then picks the voxel the CPU path picks, exactly
        grid = batch_grid(
            draws, spacing, tuple(first.shape[2:]), window, device=first.device,
            dtype=torch.float64,
        )  # fmt: skip
        out = {}
        for mode, wanted in (("bilinear", ("intensity", "weight")), ("nearest", ("label",))):
            group = [r for r in roles if kinds[r] in wanted]
            if not group:
                continue
            dtype = torch.float32 if mode == "bilinear" else torch.float64
            stacked = torch.cat([roles[r].to(dtype) for r in group], dim=1)
            moved = F.grid_sample(
                stacked, grid.to(dtype), mode=mode, padding_mode=self.padding_mode,
                align_corners=True,
            )  # fmt: skip
            for role, part in zip(group, moved.split([roles[r].shape[1] for r in group], dim=1)):
                out[role] = part.to(roles[role].dtype)
        return out

    def _intensity(
        self, batch: dict[str, Any], kinds: dict[str, str], params: Params, spacing: np.ndarray
    ) -> dict[str, torch.Tensor]:
        others = [i for i, t in enumerate(self.transforms) if not isinstance(t, SpatialTransform)]
        if not others:
            return {}
        roles = _roles(batch)
        results: dict[str, list[torch.Tensor]] = {r: [] for r in roles}
        for b, sample_params in enumerate(params):
            sample = Sample({r: t[b] for r, t in roles.items()}, kinds, tuple(spacing[b]))
            for i in others:
                step = sample_params[i]
                if step is not None:
                    sample = self.transforms[i].apply(sample, step)
            for role in roles:
                results[role].append(sample.tensors[role])
        return {role: torch.stack(values) for role, values in results.items()}


def batch_grid(
    draws: list[SpatialDraw | None],
    spacing: np.ndarray,
    input_size: Sequence[int],
    output_size: Sequence[int],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One ``grid_sample`` grid ``(B, *output_size, D)`` for per-sample draws about the centre.

    Output voxel ``j`` samples source voxel ``c_in + M (j - c_out) + t (+ d(j))`` with the
    geometric centres ``c = (size - 1) / 2``, as the CPU path does.
    """
    dims = len(output_size)
    to_input = 2.0 / np.maximum(np.asarray(input_size, dtype=np.float64) - 1.0, 1.0)
    from_output = (np.asarray(output_size, dtype=np.float64) - 1.0) / 2.0
    thetas, fields = [], []
    for b, draw in enumerate(draws):
        draw = draw or SpatialDraw.identity(dims)
        matrix, translation, displacement = draw.in_voxels(spacing[b])
        theta = np.zeros((dims, dims + 1))
        theta[:, :dims] = (to_input[:, None] * matrix * from_output[None, :])[::-1, ::-1]
        theta[:, dims] = (to_input * translation)[::-1]
        thetas.append(theta)
        fields.append(displacement)
    theta_tensor = torch.as_tensor(np.stack(thetas), dtype=dtype, device=device)
    grid = F.affine_grid(theta_tensor, [len(draws), 1, *output_size], align_corners=True)
    if any(f is not None for f in fields):
        scale = torch.as_tensor(to_input, dtype=dtype, device=device).view(dims, *[1] * dims)
        extra = torch.stack(
            [
                (f.to(device, dtype) * scale)
                if f is not None
                else torch.zeros((dims, *output_size), device=device, dtype=dtype)
                for f in fields
            ]
        )
        grid = grid + extra.flip(1).permute(0, *range(2, dims + 2), 1)
    return grid


def unsupported_reason(transforms: Sequence[Transform]) -> str | None:
    """Why these transforms cannot run batched (``None`` when they can).

    The batched path composes the spatial transforms into one resampling before the others, so
    they must come first, interpolate linearly (``grid_sample`` has no 3D cubic mode) and be of a
    kind :func:`augmentation_margin` can bound.
    """
    seen_other = False
    for transform in transforms:
        spatial = isinstance(transform, SpatialTransform)
        name = type(transform).__name__
        if spatial and seen_other:
            return f"{name} follows an intensity transform (the batched path resamples first)"
        if spatial and getattr(transform, "interpolation", "linear") == "cubic":
            return f"{name} asks for cubic interpolation"
        if spatial and not isinstance(transform, (RandomFlip, RandomAffine, RandomElastic)):
            return f"{name} has no known reach (only flip, affine and elastic are batched)"
        seen_other = seen_other or not spatial
    return None


def augmentation_margin(
    transforms: Sequence[Transform], window: Sequence[int], spacing: Sequence[float]
) -> tuple[int, ...]:
    """Voxels to read beyond the window on each side so that every spatial draw stays inside.

    A guaranteed bound: entry-wise absolute bounds of each transform's matrix (rotation from the
    angle ranges, shear by its Neumann series, the smallest scaling), translation and elastic
    reach, composed in order as :meth:`SpatialDraw.then` does, plus one voxel for linear
    interpolation. Close for small rotations (96³, ±15°, scaling 0.9: 34–41 voxels where the
    draws need up to ~29); up to ~2x the extreme draw's need at ±35° (test_batched_path.py).

    Returns:
        margin per spatial axis (``window + 2 * margin`` is read).
    """
    dims = len(window)
    scale = np.asarray(spacing, dtype=np.float64)
    matrix, reach = np.eye(dims), np.zeros(dims)
    for transform in transforms:
        if not isinstance(transform, SpatialTransform):
            continue
        step, step_reach = _reach_of(transform, dims)
        reach = reach + matrix @ step_reach
        matrix = matrix @ step
    half_mm = (np.asarray(window, dtype=np.float64) - 1.0) / 2.0 * scale
    source_half = (matrix @ half_mm + reach) / scale  # voxels from the centre
    needed = np.ceil(source_half + 1.0 - (np.asarray(window) - 1.0) / 2.0 - 1e-9)
    return tuple(int(max(0, m)) for m in needed)


def _reach_of(transform: SpatialTransform, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Entry-wise bound of one transform's draw matrix (mm) and of its shift (mm, per axis)."""
    if isinstance(transform, RandomAffine):
        inverse = _affine_inverse_bound(transform, dims)
        largest = np.array([max(abs(low), abs(high)) for low, high in transform.translation])
        return inverse, inverse @ largest
    if isinstance(transform, RandomElastic):
        return np.eye(dims), np.asarray(transform.max_displacement, dtype=np.float64)[:dims]
    if isinstance(transform, RandomFlip):
        return np.eye(dims), np.zeros(dims)
    raise ConfigError(f"augmentation: cannot bound the reach of {type(transform).__name__}")


def _affine_inverse_bound(transform: RandomAffine, dims: int) -> np.ndarray:
    """|inverse(R · Sh · S)| ≤ |S⁻¹| |Sh⁻¹| |R|ᵀ entry-wise."""
    rotation = np.eye(dims)
    axes = [(0, 1)] if dims == 2 else [[a for a in range(3) if a != axis] for axis in range(3)]
    for (i, j), (low, high) in zip(axes, transform.rotation):
        cos_max, sin_max = _trig_bounds(np.radians(low), np.radians(high))
        step = np.eye(dims)
        step[i, i] = step[j, j] = cos_max
        step[i, j] = step[j, i] = sin_max
        rotation = np.minimum(step @ rotation, 1.0)  # R_2 · R_1 · R_0; rotation entries ≤ 1
    shear_max = max(abs(v) for v in transform.shear)
    off = shear_max * (np.ones((dims, dims)) - np.eye(dims))
    if shear_max and np.max(np.abs(np.linalg.eigvals(off))) >= 1.0:
        raise ConfigError(f"augmentation: shear {transform.shear} too large to bound for batching")
    shear_inverse = np.eye(dims) + off @ np.linalg.inv(np.eye(dims) - off)
    lows = [low for low, _ in transform.scaling]
    smallest = np.full(dims, lows[0]) if transform.isotropic else np.array(lows)
    return np.diag(1.0 / smallest) @ shear_inverse @ rotation.T


def _trig_bounds(low: float, high: float) -> tuple[float, float]:
    """Largest |cos| and |sin| over the angle interval [low, high] (radians)."""
    def contains(phase: float) -> bool:  # an angle phase + k·π inside the interval
        return np.floor((high - phase) / np.pi) >= np.ceil((low - phase) / np.pi)

    cos_max = 1.0 if contains(0.0) else max(abs(np.cos(low)), abs(np.cos(high)))
    sin_max = 1.0 if contains(np.pi / 2) else max(abs(np.sin(low)), abs(np.sin(high)))
    return float(cos_max), float(sin_max)


def _roles(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in META_KEYS and isinstance(v, torch.Tensor)}


def _spacing(batch: dict[str, Any], size: int, dims: int) -> np.ndarray:
    spacing = batch.get("spacing")
    if spacing is None:
        return np.ones((size, dims))
    return np.asarray(torch.as_tensor(spacing).cpu(), dtype=np.float64).reshape(size, dims)
