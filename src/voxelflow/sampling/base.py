"""The sampler base class: draw window centres, read (and augment) only the window region.

A sampler draws centre voxels; :meth:`Sampler.sample` reads each role's window around the centre
from the cached arrays. When given the spatial part of an augmentation it composes one draw per
window and resamples the patch region (window plus the margin the draw needs) straight from the
memmap: one interpolation, no whole-volume work, no empty corners inside the image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, ShapeError
from voxelflow.sampling.window import read_window, resolve_window, window_start
from voxelflow.transforms.base import Transform
from voxelflow.transforms.compose import Compose
from voxelflow.transforms.resample import SpatialDraw, interpolation_for, resample_roles

logger = logging.getLogger(__name__)


def subject_spacing(subject: CachedSubject) -> tuple[float, ...]:
    """Voxel spacing (mm) from the subject's affine."""
    dims = len(subject.spatial_shape)
    return tuple(float(v) for v in np.linalg.norm(np.asarray(subject.affine)[:3, :dims], axis=0))


def source_of(subject: CachedSubject, role: str | None = None) -> str:
    """Where a subject's data lives, for messages: memmap file names when known."""
    roles = [role] if role else list(subject.arrays)
    files = [
        str(getattr(subject.arrays[r], "filename", "") or "") for r in roles if r in subject.arrays
    ]
    files = [f for f in files if f]
    return f"subject {subject.name!r}" + (
        f" (file {', '.join(files)})" if files else " (in memory)"
    )


class Sampler:
    """Base class of window samplers.

    Args:
        window: window size per spatial axis (2 or 3 values); ``0``/``-1`` = whole axis.
        windows_per_subject: windows drawn per call of :meth:`sample`.
        label_window: smaller window for ``label``-kind roles (same centre voxel), e.g. for
            networks with valid convolutions; ``None`` = same as ``window``.
        role_windows: explicit window per role (overrides the two above).
        pad_value: value outside the image for intensity roles (labels/weights pad with 0).

    Raises:
        ConfigError: ``windows_per_subject < 1``.

    Attributes:
        resample_kernel: how augmented windows are resampled (``system.resample_kernel``):
            ``"auto"``/``"numba"`` (fused kernel, every role of a window in one pass) or
            ``"torch"`` (``grid_sample``); set by the training pipeline.
        read_margin: voxels read beyond every unaugmented window on each side, per axis
            (``window + 2 * margin``, same centre), for the batched device augmentation to
            rotate and scale into; ``None`` = none. Set by the training pipeline.
    """

    resample_kernel: str = "auto"
    read_margin: tuple[int, ...] | None = None

    def __init__(
        self,
        window: Sequence[int],
        *,
        windows_per_subject: int = 1,
        label_window: Sequence[int] | None = None,
        role_windows: Mapping[str, Sequence[int]] | None = None,
        pad_value: float = 0.0,
    ) -> None:
        if int(windows_per_subject) < 1:
            raise ConfigError(f"expected windows_per_subject >= 1, got {windows_per_subject!r}")
        self.window = tuple(int(w) for w in window)
        self.windows_per_subject = int(windows_per_subject)
        self.label_window = (
            tuple(int(w) for w in label_window) if label_window is not None else None
        )
        self.role_windows = {r: tuple(int(w) for w in s) for r, s in (role_windows or {}).items()}
        self.pad_value = float(pad_value)

    def draw_centres(
        self, subject: CachedSubject, window: tuple[int, ...], rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Draw ``windows_per_subject`` centre voxels (int64 arrays)."""
        raise NotImplementedError

    def role_window(
        self, subject: CachedSubject, role: str, window: tuple[int, ...]
    ) -> tuple[int, ...]:
        """The window size of one role."""
        if role in self.role_windows:
            return resolve_window(
                self.role_windows[role],
                subject.spatial_shape,
                what=f"window of {role!r}",
                subject=subject.name,
            )
        if self.label_window is not None and subject.kinds.get(role) == "label":
            return resolve_window(
                self.label_window, subject.spatial_shape, what="label_window", subject=subject.name
            )
        return window

    def sample(
        self,
        subject: CachedSubject,
        rng: np.random.Generator,
        *,
        augmentation: Transform | None = None,
    ) -> list[dict[str, Any]]:
        """Draw windows from ``subject``.

        Args:
            subject: the cached subject.
            rng: random generator (centres and augmentation draws).
            augmentation: optional :class:`~voxelflow.transforms.compose.Compose`; its leading
                spatial transforms are resampled here over the patch region, the rest applied after.

        Returns:
            One dict per window: role → tensor ``(C, *window)``, ``"subject"``, ``"location"``
            (int64 start per axis), ``"kinds"`` and ``"spacing"``.
        """
        check_roles(subject)
        window = resolve_window(self.window, subject.spatial_shape, subject=subject.name)
        spacing = subject_spacing(subject)
        out = []
        compose = augmentation if isinstance(augmentation, Compose) else None  # spatial part here
        for centre in self.draw_centres(subject, window, rng):
            draw = compose.draw_spatial(rng, window=window, spacing=spacing) if compose else None
            interpolation = compose.interpolation if compose is not None else "linear"
            item = self.extract(subject, centre, window, draw=draw, interpolation=interpolation)
            if compose is not None:
                item = compose.after_spatial(item, rng)
            elif augmentation is not None:
                item = augmentation(item, rng=rng)
            out.append(item)
        return out

    def extract(
        self,
        subject: CachedSubject,
        centre: np.ndarray,
        window: tuple[int, ...],
        *,
        draw: SpatialDraw | None = None,
        interpolation: str = "linear",
    ) -> dict[str, Any]:
        """Read every role's window around ``centre`` (resampled under ``draw`` if given)."""
        start = window_start(centre, window)
        geometric = start + (np.asarray(window, dtype=np.float64) - 1.0) / 2.0
        spacing = subject_spacing(subject)
        item: dict[str, Any] = {}
        resampled: dict[str, tuple[np.ndarray, tuple[int, ...], np.ndarray, str, float]] = {}
        for role, array in subject.arrays.items():
            size = self.role_window(subject, role, window)
            kind = subject.kinds.get(role, "intensity")
            pad = self.pad_value if kind == "intensity" else 0.0
            if draw is None and self.read_margin is not None:
                size = tuple(s + 2 * m for s, m in zip(size, self.read_margin))
            role_start = window_start(centre, size)
            if draw is None:
                item[role] = torch.from_numpy(read_window(array, role_start, size, pad_value=pad))
            else:
                mode = interpolation_for(kind, interpolation)
                resampled[role] = (array, size, role_start - geometric, mode, pad)
        if resampled and draw is not None:  # every role in one pass where the kernel allows
            parts = list(resampled.values())
            windows = resample_roles(
                [p[0] for p in parts],
                draw,
                centre=geometric,
                first_offsets=[p[2] for p in parts],
                sizes=[p[1] for p in parts],
                spacing=spacing,
                interpolations=[p[3] for p in parts],
                pad_values=[p[4] for p in parts],
                kernel=self.resample_kernel,
            )
            item.update(zip(resampled, windows))
        item["subject"] = subject.name
        item["location"] = torch.as_tensor(start, dtype=torch.int64)
        item["kinds"] = dict(subject.kinds)
        item["spacing"] = torch.tensor(spacing, dtype=torch.float64)
        return item


def check_map_shape(subject: CachedSubject, role: str) -> np.ndarray:
    """The role's array, checked to exist and to share the subject's spatial shape."""
    if role not in subject.arrays:
        raise ConfigError(
            f"expected role {role!r} in {source_of(subject)}, got roles {sorted(subject.arrays)}"
        )
    array = subject.arrays[role]
    if tuple(array.shape[1:]) != tuple(subject.spatial_shape) or array.ndim - 1 != len(
        subject.spatial_shape
    ):
        raise ShapeError(
            f"expected {role!r} of spatial shape {subject.spatial_shape} in {source_of(subject, role)}, "
            f"got {tuple(array.shape[1:])}"
        )
    return array


def check_roles(subject: CachedSubject) -> None:
    """Every role must share the subject's spatial shape (one grid per subject).

    Raises:
        ShapeError: naming the subject, the role and its file.
    """
    shape = subject.spatial_shape
    for role, array in subject.arrays.items():
        if tuple(array.shape[1:]) != tuple(shape):
            raise ShapeError(
                f"expected every role of {source_of(subject)} on one grid of spatial shape {shape}, "
                f"got {role!r} with shape {tuple(array.shape[1:])} ({source_of(subject, role)})"
            )
