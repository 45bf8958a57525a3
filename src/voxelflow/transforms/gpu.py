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

from voxelflow.transforms.base import META_KEYS, Sample, SpatialTransform, Transform, kind_of
from voxelflow.transforms.resample import SpatialDraw

Params = list[list[dict[str, Any] | None]]


class BatchAugmentation:
    """Per-sample random augmentation applied batched on the batch's device.

    Args:
        transforms: the transforms (a Compose's ``transforms`` or a list); spatial ones must
            come first (they are composed into one resampling).
        output_window: spatial size to produce (centre of the input); ``None`` = input size.
        seed: seed of the generator used when ``__call__`` gets no ``rng``.
    """

    def __init__(
        self,
        transforms: Any,
        *,
        output_window: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        self.transforms: list[Transform] = list(getattr(transforms, "transforms", transforms))
        self.output_window = tuple(output_window) if output_window is not None else None
        self.rng = np.random.default_rng(seed)

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

    def _spatial(self, roles, kinds, params: Params, window, spacing) -> dict[str, torch.Tensor]:
        spatial_index = [
            i for i, t in enumerate(self.transforms) if isinstance(t, SpatialTransform)
        ]
        first = next(iter(roles.values()))
        draws = []
        for b, sample_params in enumerate(params):
            total = None
            for i in spatial_index:
                if sample_params[i] is not None:
                    draw = self.transforms[i].to_draw(
                        sample_params[i], window=window, spacing=spacing[b]
                    )
                    total = draw if total is None else total.then(draw)
            draws.append(total)
        if all(d is None for d in draws) and tuple(first.shape[2:]) == tuple(window):
            return {}
        grid = batch_grid(draws, spacing, tuple(first.shape[2:]), window, device=first.device)
        out = {}
        for mode, wanted in (("bilinear", ("intensity", "weight")), ("nearest", ("label",))):
            group = [r for r in roles if kinds[r] in wanted]
            if not group:
                continue
            stacked = torch.cat([roles[r].float() for r in group], dim=1)
            moved = F.grid_sample(
                stacked, grid, mode=mode, padding_mode="zeros", align_corners=True
            )
            for role, part in zip(group, moved.split([roles[r].shape[1] for r in group], dim=1)):
                out[role] = part.to(roles[role].dtype)
        return out

    def _intensity(self, batch, kinds, params: Params, spacing) -> dict[str, torch.Tensor]:
        others = [i for i, t in enumerate(self.transforms) if not isinstance(t, SpatialTransform)]
        if not others:
            return {}
        roles = _roles(batch)
        results: dict[str, list[torch.Tensor]] = {r: [] for r in roles}
        for b, sample_params in enumerate(params):
            sample = Sample({r: t[b] for r, t in roles.items()}, kinds, tuple(spacing[b]))
            for i in others:
                if sample_params[i] is not None:
                    sample = self.transforms[i].apply(sample, sample_params[i])
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
    theta_tensor = torch.as_tensor(np.stack(thetas), dtype=torch.float32, device=device)
    grid = F.affine_grid(theta_tensor, [len(draws), 1, *output_size], align_corners=True)
    if any(f is not None for f in fields):
        scale = torch.as_tensor(to_input, dtype=torch.float32, device=device).view(
            dims, *[1] * dims
        )
        extra = torch.stack(
            [
                (f.to(device, torch.float32) * scale)
                if f is not None
                else torch.zeros((dims, *output_size), device=device)
                for f in fields
            ]
        )
        grid = grid + extra.flip(1).permute(0, *range(2, dims + 2), 1)
    return grid


def _roles(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in META_KEYS and isinstance(v, torch.Tensor)}


def _spacing(batch: dict[str, Any], size: int, dims: int) -> np.ndarray:
    spacing = batch.get("spacing")
    if spacing is None:
        return np.ones((size, dims))
    return np.asarray(torch.as_tensor(spacing).cpu(), dtype=np.float64).reshape(size, dims)
