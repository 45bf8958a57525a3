"""Training samplers: uniform, weighted (sampling map) and balanced (per-class centres).

Example:
    >>> import numpy as np
    >>> from voxelflow.data.cached import CachedSubject
    >>> subject = CachedSubject("s", {"image": np.zeros((1, 8, 8, 8), np.float32)}, {"image": "intensity"})
    >>> windows = UniformSampler((4, 4, 4), windows_per_subject=2).sample(subject, np.random.default_rng(0))
    >>> len(windows), tuple(windows[0]["image"].shape)
    (2, (1, 4, 4, 4))
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from voxelflow.data.cached import CachedSubject, compute_class_locations
from voxelflow.errors import ConfigError, DataError
from voxelflow.sampling.base import Sampler, check_map_shape, source_of
from voxelflow.sampling.window import clamp_centre, valid_centre_bounds

logger = logging.getLogger(__name__)


class UniformSampler(Sampler):
    """Centres uniform over the positions where the window fits (padded where it cannot).

    Shape:
        each window: role → ``(C, *window)``; ``location``: ``(D,)`` int64 start voxel.

    Example:
        >>> image = np.zeros((1, 12, 10, 8), np.float32)
        >>> subject = CachedSubject("s", {"image": image}, {"image": "intensity"})
        >>> sampler = UniformSampler((4, 4, 4), windows_per_subject=3)
        >>> windows = sampler.sample(subject, np.random.default_rng(0))
        >>> len(windows), tuple(windows[0]["image"].shape), tuple(windows[0]["location"].shape)
        (3, (1, 4, 4, 4), (3,))
    """

    def draw_centres(
        self, subject: CachedSubject, window: tuple[int, ...], rng: np.random.Generator
    ) -> list[np.ndarray]:
        low, high = valid_centre_bounds(window, subject.spatial_shape)
        return [rng.integers(low, high + 1) for _ in range(self.windows_per_subject)]


def _draw_from_flat(
    flat: np.ndarray,
    shape: Sequence[int],
    window: tuple[int, ...],
    rng: np.random.Generator,
    *,
    tries: int = 8,
) -> np.ndarray:
    """A centre among ``flat`` voxel indices, preferring ones where the window fits.

    Rejection sampling with a few tries; the last draw is clamped into the valid range (the
    drawn voxel stays inside the window), so this never loops forever.
    """
    low, high = valid_centre_bounds(window, shape)
    centre = None
    for _ in range(tries):
        centre = np.array(
            np.unravel_index(int(flat[rng.integers(flat.size)]), shape), dtype=np.int64
        )
        if np.all(centre >= low) and np.all(centre <= high):
            return centre
    assert centre is not None, "tries must be at least 1"
    return clamp_centre(centre, window, shape)


class WeightedSampler(Sampler):
    """Centres drawn with probability proportional to a sampling-map role.

    Args:
        window: see :class:`~voxelflow.sampling.base.Sampler`.
        map_role: role holding the non-negative sampling map (a table column).
        **kwargs: options of :class:`~voxelflow.sampling.base.Sampler`.

    Raises:
        DataError: negative, non-finite or all-zero map (naming subject and file).
        ShapeError: map shape differs from the image.

    Shape:
        sampling map: ``(C, *spatial)`` (channels summed); each window: role → ``(C, *window)``.

    Example:
        >>> weights = np.zeros((1, 8, 8, 8), np.float32)
        >>> weights[0, 6, 1, 3] = 1.0  # all the probability on one voxel
        >>> subject = CachedSubject("s", {"sampling_map": weights}, {"sampling_map": "weight"})
        >>> window = WeightedSampler((4, 4, 4)).sample(subject, np.random.default_rng(0))[0]
        >>> float(window["sampling_map"].sum())  # that voxel is inside the window
        1.0
    """

    def __init__(
        self, window: Sequence[int], *, map_role: str = "sampling_map", **kwargs: Any
    ) -> None:
        super().__init__(window, **kwargs)
        self.map_role = map_role
        self._cdf_cache: dict[str, np.ndarray] = {}

    def _cdf(self, subject: CachedSubject) -> np.ndarray:
        if subject.name in self._cdf_cache:
            return self._cdf_cache[subject.name]
        weights = (
            np.asarray(check_map_shape(subject, self.map_role), dtype=np.float64)
            .sum(axis=0)
            .reshape(-1)
        )
        where = source_of(subject, self.map_role)
        if not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise DataError(
                f"expected a finite, non-negative sampling map {self.map_role!r} in {where}, got min {weights.min()}"
            )
        total = weights.sum()
        if total <= 0:
            raise DataError(
                f"expected a sampling map {self.map_role!r} with a positive sum in {where}, got all zeros"
            )
        cdf = np.cumsum(weights) / total
        if len(self._cdf_cache) < 64:
            self._cdf_cache[subject.name] = cdf
        return cdf

    def draw_centres(
        self, subject: CachedSubject, window: tuple[int, ...], rng: np.random.Generator
    ) -> list[np.ndarray]:
        cdf = self._cdf(subject)
        flat = np.minimum(
            np.searchsorted(cdf, rng.random(self.windows_per_subject), side="right"), cdf.size - 1
        )
        shape = subject.spatial_shape
        return [clamp_centre(np.unravel_index(int(i), shape), window, shape) for i in flat]


class BalancedSampler(Sampler):
    """Centres drawn per class with configured ratios, from precomputed class locations.

    Args:
        window: see :class:`~voxelflow.sampling.base.Sampler`.
        class_ratios: ``"foreground"`` (1:1 background : any foreground, foreground voxels
            uniform), ``"equal"`` (equal over the classes present), a list of ratios indexed by
            label value, or a mapping value → ratio.
        label_role: role with the label map.
        **kwargs: options of :class:`~voxelflow.sampling.base.Sampler`.

    A class absent from a subject is skipped with a warning naming the subject; a subject with
    no class of positive ratio raises :class:`~voxelflow.errors.DataError`.

    Raises:
        ConfigError: negative ratios or all ratios zero.

    Shape:
        label: ``(1, *spatial)``; each window: role → ``(C, *window)``.

    Example:
        >>> label = np.zeros((1, 8, 8, 8), np.int16)
        >>> label[0, 2, 5, 4] = 1  # one foreground voxel
        >>> locations = compute_class_locations(label)  # done by the preprocessing cache
        >>> subject = CachedSubject("s", {"label": label}, {"label": "label"}, class_locations=locations)
        >>> sampler = BalancedSampler((3, 3, 3), class_ratios=[0, 1], windows_per_subject=4)
        >>> [int(w["label"].sum()) for w in sampler.sample(subject, np.random.default_rng(0))]
        [1, 1, 1, 1]
    """

    def __init__(
        self,
        window: Sequence[int],
        *,
        class_ratios: str | Sequence[float] | Mapping[int, float] = "foreground",
        label_role: str = "label",
        **kwargs: Any,
    ) -> None:
        super().__init__(window, **kwargs)
        if isinstance(class_ratios, str) and class_ratios not in ("foreground", "equal"):
            raise ConfigError(
                f"expected class_ratios 'foreground', 'equal', a list or a mapping, got {class_ratios!r}"
            )
        if not isinstance(class_ratios, str):
            values = (
                list(class_ratios.values())
                if isinstance(class_ratios, Mapping)
                else list(class_ratios)
            )
            if any(float(v) < 0 for v in values) or sum(float(v) for v in values) <= 0:
                raise ConfigError(
                    f"expected non-negative class_ratios with a positive sum, got {class_ratios!r}"
                )
        self.class_ratios = class_ratios
        self.label_role = label_role
        self._warned: set[tuple[str, int]] = set()

    def _locations(self, subject: CachedSubject) -> dict[int, np.ndarray]:
        if subject.class_locations is None:
            check_map_shape(subject, self.label_role)
            logger.warning(
                "%s has no precomputed class locations; computing them now", source_of(subject)
            )
            subject.class_locations = compute_class_locations(
                np.asarray(subject.arrays[self.label_role])
            )
        return subject.class_locations

    def class_probabilities(self, subject: CachedSubject) -> tuple[list[np.ndarray], np.ndarray]:
        """Candidate index arrays and their probabilities for one subject."""
        locations = self._locations(subject)
        if self.class_ratios == "foreground":
            foreground = {v: idx for v, idx in locations.items() if v != 0 and idx.size}
            wanted = {0: 1.0, 1: 1.0}
            groups = {0: [locations.get(0, np.empty(0, np.int64))], 1: list(foreground.values())}
        else:
            if isinstance(self.class_ratios, str):  # "equal" (__init__ refused other names)
                wanted = {v: 1.0 for v in locations}
            elif isinstance(self.class_ratios, Mapping):
                wanted = {int(k): float(v) for k, v in self.class_ratios.items()}
            else:
                wanted = {i: float(v) for i, v in enumerate(self.class_ratios)}
            groups = {v: [locations.get(v, np.empty(0, np.int64))] for v in wanted}
        arrays, ratios = [], []
        for value, ratio in wanted.items():
            members = [a for a in groups[value] if a.size]
            if ratio <= 0:
                continue
            if not members:
                self._warn_absent(subject, value)
                continue
            sizes = np.array([a.size for a in members], dtype=np.float64)
            arrays.extend(members)
            ratios.extend(ratio * sizes / sizes.sum())
        if not arrays:
            raise DataError(
                f"expected at least one sampled class in {source_of(subject, self.label_role)}, got none present"
            )
        probabilities = np.asarray(ratios)
        return arrays, probabilities / probabilities.sum()

    def _warn_absent(self, subject: CachedSubject, value: int) -> None:
        key = (subject.name, value)
        if key not in self._warned:
            self._warned.add(key)
            what = (
                "foreground"
                if self.class_ratios == "foreground" and value == 1
                else f"class {value}"
            )
            warnings.warn(
                f"{what} is absent from {source_of(subject, self.label_role)}; skipping it",
                stacklevel=3,
            )

    def draw_centres(
        self, subject: CachedSubject, window: tuple[int, ...], rng: np.random.Generator
    ) -> list[np.ndarray]:
        arrays, probabilities = self.class_probabilities(subject)
        shape = subject.spatial_shape
        picks = rng.choice(len(arrays), size=self.windows_per_subject, p=probabilities)
        return [_draw_from_flat(arrays[i], shape, window, rng) for i in picks]
