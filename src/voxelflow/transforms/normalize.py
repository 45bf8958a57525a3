"""Intensity normalisation of ``(C, *spatial)`` images, per channel, with optional foreground masks.

Registered in :data:`NORMALIZERS` (config: ``preprocessing.normalization: [{name: zscore}]``):

========================== ============================================================
``zscore``                 (I - mean) / std, statistics inside the mask (NiftyNet whitening)
``percentile_rescale``     clip to the [lower, upper] percentiles, rescale to [out_min, out_max]
``ct_window``              fixed HU window [low, high] (or center/width) → [0, 1]
``ct``                     clip to dataset [low, high] then (I - mean) / std (nnU-Net's CT scheme)
``histogram_standardization`` Nyúl et al. 2000 landmarks, fitted on the training images
========================== ============================================================

Steps with fitted state (``requires_fit``) expose :meth:`Normalizer.fit` (a list of training
images), :meth:`Normalizer.state_dict` and :meth:`Normalizer.from_state`; the state is saved as
JSON next to the model and feeds the preprocessing cache key.

Foreground masks (``mask=`` on every step): ``"none"``, ``"nonzero"``, ``"otsu"`` (Otsu
threshold, numpy implementation), ``"threshold"`` (I > ``mask_threshold``), ``"mean"`` (I > the
image mean, NiftyNet's ``mean_plus``), ``"body"`` (the body: above Otsu's threshold, or above
air in CT, largest component, holes filled: see :func:`body_mask`); channels are combined with
``mask_combine`` = ``"and"``, ``"or"`` or ``"per_channel"`` (NiftyNet's ``multi``). ``outside``
sets every voxel outside the mask to one value after normalising (so an exactly-zero and a noisy
background map alike), and ``channels`` limits a step to some channels (per-channel schemes).

Example:
    >>> step = NORMALIZERS.get("zscore")(mask="nonzero")
    >>> out = step(np.array([[[0.0, 1.0], [2.0, 3.0]]]))
    >>> round(float(out[0][out[0] != out[0, 0, 0]].mean()), 6)
    0.0
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from voxelflow.errors import ConfigError, DataError
from voxelflow.registry import Registry

logger = logging.getLogger(__name__)

MaskMethod = Literal["none", "nonzero", "otsu", "threshold", "mean", "body"]
#: HU below which a voxel is air in CT; a channel whose 0.5 percentile is below it looks like CT
CT_AIR_HU = -800.0
MaskCombine = Literal["and", "or", "per_channel"]

#: Landmark percentile sets of histogram standardisation (percent; the ends are the cutoffs).
LANDMARK_SETS: dict[str, tuple[float, ...]] = {
    "percentile": (10, 20, 30, 40, 50, 60, 70, 80, 90),
    "quartile": (25, 50, 75),
    "median": (50,),
    "all": (10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90),
}


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold: the histogram split maximising the between-class variance.

    Args:
        values: intensities, any shape.
        bins: histogram bins.

    Returns:
        the threshold (upper edge of the last bin of the lower class).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(flat, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def looks_like_ct(channel: np.ndarray) -> bool:
    """True when a channel ``(*spatial)`` has air near -1000 HU and tissue above 0 (a CT in HU)."""
    sample = np.asarray(channel).ravel(order="K")[:: max(1, np.asarray(channel).size // 500_000)]
    low, high = np.percentile(sample, [0.5, 99.5])
    return bool(low < CT_AIR_HU and high > 0.0)


def body_mask(channel: np.ndarray, *, looks_ct: bool | None = None) -> np.ndarray:
    """Boolean mask of the body (head, torso) in one channel ``(*spatial)``, same shape.

    CT: voxels above -500 HU (air is -1000). Otherwise voxels above Otsu's threshold. The
    largest connected component is kept and its holes are filled, so dark tissue inside the body
    (CSF, lungs) stays in and background noise stays out.

    Args:
        channel: one channel.
        looks_ct: whether it is a CT in HU; default decided by :func:`looks_like_ct`.
    """
    from scipy import ndimage

    array = np.asarray(channel)
    if array.size == 0 or np.all(array == array.flat[0]):
        return np.ones(array.shape, dtype=bool)
    ct = looks_like_ct(array) if looks_ct is None else looks_ct
    mask = array > -500.0 if ct else array > otsu_threshold(array)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def foreground_mask(
    data: np.ndarray,
    *,
    method: MaskMethod = "otsu",
    threshold: float = 0.0,
    combine: MaskCombine = "and",
) -> np.ndarray:
    """Boolean foreground mask of an image ``(C, *spatial)``, same shape.

    Args:
        data: the image.
        method: ``none`` (everything), ``nonzero``, ``otsu``, ``threshold`` (I > threshold),
            ``mean`` (I > the channel mean) or ``body`` (:func:`body_mask`).
        threshold: used by ``method="threshold"``.
        combine: ``and``/``or`` give one mask shared by all channels; ``per_channel`` keeps each.

    Raises:
        ConfigError: an unknown method or combine rule.

    Shape:
        data: ``(C, *spatial)`` → mask ``(C, *spatial)``
    """
    array = np.asarray(data)
    if method == "none":
        return np.ones(array.shape, dtype=bool)
    rules = {
        "nonzero": lambda c: c != 0,
        "otsu": lambda c: c > otsu_threshold(c),
        "threshold": lambda c: c > threshold,
        "mean": lambda c: c > c.mean(),
        "body": body_mask,
    }
    if method not in rules:
        raise ConfigError(f"expected mask one of {['none', *rules]}, got {method!r}")
    masks = np.stack([rules[method](channel) for channel in array])
    if combine == "per_channel":
        return masks
    if combine not in ("and", "or"):
        raise ConfigError(f"expected mask_combine 'and', 'or' or 'per_channel', got {combine!r}")
    shared = masks.all(axis=0) if combine == "and" else masks.any(axis=0)
    return np.broadcast_to(shared, array.shape).copy()


class Normalizer:
    """Base of the normalisation steps: a callable on ``(C, *spatial)`` float arrays.

    Args:
        mask: foreground mask method for the statistics (see :func:`foreground_mask`).
        mask_threshold: threshold of ``mask="threshold"``.
        mask_combine: how channel masks combine.
        outside: value given to voxels outside the mask after normalising (None keeps them).
        channels: channel indices this step normalises (None: all); the others pass unchanged.
    """

    requires_fit: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        mask: MaskMethod = "none",
        mask_threshold: float = 0.0,
        mask_combine: MaskCombine = "and",
        outside: float | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        self.mask = mask
        self.mask_threshold = mask_threshold
        self.mask_combine = mask_combine
        self.outside = outside
        self.channels = None if channels is None else [int(c) for c in channels]

    def masks(self, data: np.ndarray, *, path: str | Path | None = None) -> np.ndarray:
        """The foreground mask ``(C, *spatial)``; an empty channel mask falls back to all voxels."""
        masks = foreground_mask(
            data, method=self.mask, threshold=self.mask_threshold, combine=self.mask_combine
        )
        for index, channel_mask in enumerate(masks):
            if self.mask != "none" and channel_mask.size > 1000 and channel_mask.mean() > 0.995:
                # the CT trap: air is -1000, so 'nonzero' (or 'threshold' at 0) is every voxel
                logger.warning(
                    "%s: the %r mask covers %.1f %% of channel %d of %s, so the statistics are the "
                    "whole image's; on CT use mask: body (or the plan's 'ct' scheme)",
                    self.name or "normalisation",
                    self.mask,
                    100.0 * float(channel_mask.mean()),
                    index,
                    path or "an image",
                )
            if not channel_mask.any():
                logger.warning(
                    "empty %s foreground mask in channel %d of %s; using all voxels",
                    self.mask,
                    index,
                    path or "an image",
                )
                masks[index] = True
        return masks

    def __call__(self, data: np.ndarray, *, path: str | Path | None = None) -> np.ndarray:
        """Normalise ``data`` ``(C, *spatial)``; returns float32 of the same shape."""
        array = np.asarray(data, dtype=np.float32)
        if self.requires_fit and not self.is_fitted:
            raise DataError(
                f"normalizer {self.name!r} is not fitted: call fit() on training images first"
            )
        if self.channels is not None and max(self.channels, default=-1) >= len(array):
            raise DataError(
                f"normalizer {self.name!r}: channels {self.channels} requested, "
                f"{path or 'the image'} has {len(array)}"
            )
        masks = self.masks(array, path=path)
        out = []
        for index, (channel, mask) in enumerate(zip(array, masks)):
            if self.channels is not None and index not in self.channels:
                out.append(channel)
                continue
            result = self.apply_channel(channel, mask, index)
            if self.outside is not None:
                result = np.where(mask, result, np.float32(self.outside)).astype(np.float32)
            out.append(result)
        return np.stack(out)

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        """Normalise one channel given its mask."""
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        """True when no fitting is needed or fitting was done."""
        return True

    def fit(self, images: Sequence[np.ndarray]) -> Normalizer:
        """Fit on training images ``(C, *spatial)`` (no-op for stateless steps)."""
        return self

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (empty for stateless steps)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the fitted state from :meth:`state_dict`."""

    @classmethod
    def from_state(cls, state: dict[str, Any], **kwargs: Any) -> Normalizer:
        """Build with ``kwargs`` and restore the fitted ``state``."""
        step = cls(**kwargs)
        step.load_state(state)
        return step

    def save(self, path: str | Path) -> None:
        """Write the fitted state as JSON (e.g. next to the model)."""
        Path(path).write_text(json.dumps({"name": self.name, "state": self.state_dict()}, indent=2))


NORMALIZERS: Registry[type[Normalizer]] = Registry("normalizer")


@NORMALIZERS.register("zscore")
class ZScore(Normalizer):
    """Zero mean, unit variance per channel, statistics inside the mask; all voxels are mapped.

    A channel with zero variance is only centred (with a warning), never divided by zero.
    """

    name = "zscore"

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        values = channel[mask].astype(np.float64)
        mean, std = float(values.mean()), float(values.std())
        if std < 1e-8:
            logger.warning("zscore: channel %d has zero variance; only subtracting the mean", index)
            std = 1.0
        return ((channel - mean) / std).astype(np.float32)


@NORMALIZERS.register("percentile_rescale")
class PercentileRescale(Normalizer):
    """Map the [lower, upper] percentiles (inside the mask) to [out_min, out_max], clipping.

    Args:
        lower: lower percentile (0-100).
        upper: upper percentile (0-100).
        out_min: output of the lower percentile.
        out_max: output of the upper percentile.
        clip: clip outputs to [out_min, out_max].
    """

    name = "percentile_rescale"

    def __init__(
        self,
        lower: float = 0.5,
        upper: float = 99.5,
        *,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        **mask_options: Any,
    ) -> None:
        super().__init__(**mask_options)
        if not 0 <= lower < upper <= 100:
            raise ConfigError(
                f"expected 0 <= lower < upper <= 100, got lower={lower}, upper={upper}"
            )
        self.lower, self.upper, self.out_min, self.out_max, self.clip = (
            lower,
            upper,
            out_min,
            out_max,
            clip,
        )

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        low, high = np.percentile(channel[mask], [self.lower, self.upper])
        return _rescale(channel, float(low), float(high), self.out_min, self.out_max, self.clip)


@NORMALIZERS.register("ct_window")
class CTWindow(Normalizer):
    """Fixed intensity window (CT Hounsfield units) [low, high] → [out_min, out_max], clipped.

    Args:
        low: lower window bound (HU); or give ``center`` and ``width``.
        high: upper window bound (HU).
        center: window centre (HU), with ``width``.
        width: window width (HU).
        out_min: output value of ``low``.
        out_max: output value of ``high``.
    """

    name = "ct_window"

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        center: float | None = None,
        width: float | None = None,
        out_min: float = 0.0,
        out_max: float = 1.0,
    ) -> None:
        super().__init__()
        if center is not None and width is not None:
            low, high = center - width / 2, center + width / 2
        if low is None or high is None or not low < high:
            raise ConfigError(
                f"ct_window: expected low < high (or center and width), got low={low}, high={high}"
            )
        self.low, self.high, self.out_min, self.out_max = float(low), float(high), out_min, out_max

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        return _rescale(channel, self.low, self.high, self.out_min, self.out_max, True)


@NORMALIZERS.register("ct")
class CTNormalize(Normalizer):
    """Clip to a dataset-wide HU range, then z-score with dataset-wide statistics (nnU-Net's CT).

    The four numbers come from the foreground of the training set (``voxelflow plan`` writes
    them: the 0.5 and 99.5 percentiles, the mean and the std), so every scan gets the same map.

    Args:
        low: lower clip (HU).
        high: upper clip (HU).
        mean: subtracted after clipping.
        std: divided by after subtracting.
    """

    name = "ct"

    def __init__(
        self, low: float, high: float, mean: float, std: float, **mask_options: Any
    ) -> None:
        super().__init__(**mask_options)
        if not low < high or not std > 0:
            raise ConfigError(
                f"ct: expected low < high and std > 0, got low={low}, high={high}, std={std}"
            )
        self.low, self.high, self.mean, self.std = float(low), float(high), float(mean), float(std)

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        clipped = np.clip(channel, self.low, self.high)
        return ((clipped - self.mean) / self.std).astype(np.float32)


def _rescale(
    channel: np.ndarray, low: float, high: float, out_min: float, out_max: float, clip: bool
) -> np.ndarray:
    if high - low < 1e-12:
        logger.warning("rescale: window [%g, %g] is empty; output set to %g", low, high, out_min)
        return np.full(channel.shape, out_min, dtype=np.float32)
    scaled = (channel.astype(np.float64) - low) / (high - low) * (out_max - out_min) + out_min
    if clip:
        scaled = np.clip(scaled, min(out_min, out_max), max(out_min, out_max))
    return scaled.astype(np.float32)


@NORMALIZERS.register("histogram_standardization")
class HistogramStandardization(Normalizer):
    """Nyúl et al. (IEEE TMI 2000) histogram standardisation, one landmark set per channel.

    Landmarks are the intensities at the percentiles ``[cutoff[0], *LANDMARK_SETS[landmarks],
    cutoff[1]]`` (percent; default ``percentile`` = 1, 10, 20, ..., 90, 99) inside the mask.
    ``fit`` maps every training image's landmarks linearly so that the cutoffs land on
    ``scale`` (default 0 and 100) and averages them; applying maps an image's landmarks onto
    the reference piecewise-linearly, extending the end segments beyond the cutoffs.

    Args:
        cutoff: lower and upper cutoff percentiles (percent).
        landmarks: ``percentile``, ``quartile``, ``median`` or ``all`` (see :data:`LANDMARK_SETS`).
        scale: output values of the cutoff landmarks.
    """

    name = "histogram_standardization"
    requires_fit = True

    def __init__(
        self,
        cutoff: Sequence[float] = (1.0, 99.0),
        landmarks: str = "percentile",
        *,
        scale: Sequence[float] = (0.0, 100.0),
        **mask_options: Any,
    ) -> None:
        super().__init__(**mask_options)
        if landmarks not in LANDMARK_SETS:
            raise ConfigError(
                f"expected landmarks one of {sorted(LANDMARK_SETS)}, got {landmarks!r}"
            )
        inner = LANDMARK_SETS[landmarks]
        if not 0 <= cutoff[0] < inner[0] and inner[-1] < cutoff[1] <= 100:
            raise ConfigError(f"expected cutoffs outside the landmarks {inner}, got {list(cutoff)}")
        self.percentiles = [float(cutoff[0]), *map(float, inner), float(cutoff[1])]
        self.scale = (float(scale[0]), float(scale[1]))
        self.reference: list[list[float]] | None = None

    @property
    def is_fitted(self) -> bool:
        return self.reference is not None

    def _landmarks(self, channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.percentile(channel[mask].astype(np.float64), self.percentiles)

    def fit(self, images: Sequence[np.ndarray]) -> HistogramStandardization:
        """Average the scaled landmarks of each channel over ``images`` ``(C, *spatial)``."""
        if not images:
            raise DataError(
                "histogram_standardization: expected at least one training image, got none"
            )
        per_channel: list[list[np.ndarray]] = [[] for _ in range(np.asarray(images[0]).shape[0])]
        for image in images:
            array = np.asarray(image, dtype=np.float32)
            for index, (channel, mask) in enumerate(zip(array, self.masks(array))):
                marks = self._landmarks(channel, mask)
                span = max(marks[-1] - marks[0], 1e-12)
                per_channel[index].append(
                    self.scale[0] + (marks - marks[0]) / span * (self.scale[1] - self.scale[0])
                )
        self.reference = [np.mean(marks, axis=0).tolist() for marks in per_channel]
        return self

    def apply_channel(self, channel: np.ndarray, mask: np.ndarray, index: int) -> np.ndarray:
        reference = self.reference or []  # fitted: checked in __call__
        if index >= len(reference):
            raise DataError(
                f"histogram_standardization: expected at most {len(reference)} channels "
                f"(as fitted), got channel {index}"
            )
        target = np.asarray(reference[index])
        # landmarks of the image; tiny steps keep them strictly increasing on flat histograms
        source = self._landmarks(channel, mask) + np.arange(target.size) * 1e-6
        return _piecewise_linear(channel.astype(np.float64), source, target).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles), "reference": self.reference}

    def load_state(self, state: dict[str, Any]) -> None:
        if list(state.get("percentiles", [])) != self.percentiles:
            raise ConfigError(
                f"histogram_standardization: saved landmarks use percentiles {state.get('percentiles')}, "
                f"the config asks for {self.percentiles}; refit"
            )
        self.reference = [list(map(float, marks)) for marks in state["reference"]]


def _piecewise_linear(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    out = np.interp(values, source, target)
    low_slope = (target[1] - target[0]) / (source[1] - source[0])
    high_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below, above = values < source[0], values > source[-1]
    out[below] = target[0] + (values[below] - source[0]) * low_slope
    out[above] = target[-1] + (values[above] - source[-1]) * high_slope
    return out


def build_normalizer(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    state: dict[str, Any] | None = None,
    key: str = "preprocessing.normalization[0]",
) -> Normalizer:
    """Build a registered normalizer by name, optionally restoring fitted state.

    Raises:
        RegistryError: unknown name (with suggestions).
        ConfigError: invalid options, naming ``key`` (``preprocessing.normalization[0].lower``).
    """
    step: Normalizer = NORMALIZERS.build(name, kwargs or {}, key=key)
    if state:
        step.load_state(state)
    return step
