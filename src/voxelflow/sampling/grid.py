"""Inference over a grid of windows: GridSampler, GridAggregator and ``sliding_window``.

Window placement matches MONAI's ``sliding_window_inference``: along each axis windows start
every ``int(window * (1 - overlap))`` voxels (or ``window - overlap`` for an integer number of
voxels) and the last window is shifted back to end at the image border. Blending:

* ``gaussian``: each output is weighted by a Gaussian importance map (sigma = ``sigma_scale`` ×
  window, floored at 1e-3 like MONAI) and the weighted sum divided by the summed weights;
* ``mean``: plain average of overlapping outputs;
* ``crop``: NiftyNet style: each window keeps only its centre (half the overlap is dropped on each
  inner side), written without averaging.

Voxels no window covers get ``fill_value``. When the network's output window is smaller than its
input (``network.output_size(window)``), the output is placed at the window centre and the image
is padded so that every voxel is still predicted.

Example:
    >>> out = sliding_window(torch.nn.Identity(), torch.rand(1, 1, 20, 18, 9), (8, 8, 8))
    >>> tuple(out.shape)
    (1, 1, 20, 18, 9)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.sampling.progress import stages_timed, timed_stage, window_bar
from voxelflow.sampling.window import read_window, resolve_window

BLENDS = ("gaussian", "mean", "crop")


def grid_starts(
    spatial_shape: Sequence[int], window: Sequence[int], overlap: float | Sequence[float]
) -> np.ndarray:
    """Window starts ``(N, D)`` covering ``spatial_shape`` (MONAI's placement).

    Args:
        spatial_shape: image size.
        window: window size (may exceed the image: one window, start 0).
        overlap: fraction in ``[0, 1)`` or an integer number of voxels ``>= 1``, per axis or one.

    Raises:
        ConfigError: negative overlap or a fraction ``>= 1``.
    """
    overlaps = list(overlap) if isinstance(overlap, Sequence) else [overlap] * len(window)
    per_axis = []
    for size, win, ov in zip(spatial_shape, window, overlaps):
        if ov < 0 or (isinstance(ov, float) and ov >= 1.0):
            raise ConfigError(
                f"expected overlap as a fraction in [0, 1) or voxels >= 1, got {overlap!r}"
            )
        if win >= size:
            per_axis.append([0])
            continue
        interval = int(win * (1.0 - ov)) if isinstance(ov, float) or ov == 0 else int(win - ov)
        interval = max(interval, 1)
        count = next(k for k in range(size) if k * interval + win >= size) + 1
        per_axis.append([min(k * interval, size - win) for k in range(count)])
    return np.array(list(itertools.product(*per_axis)), dtype=np.int64).reshape(-1, len(window))


def importance_map(
    window: Sequence[int], *, blend: str = "gaussian", sigma_scale: float = 0.125
) -> torch.Tensor:
    """Weights of one window: Gaussian (MONAI's formula, floored at 1e-3) or ones.

    Shape:
        returns ``(*window)``
    """
    return _importance_map(tuple(int(w) for w in window), blend, float(sigma_scale)).clone()


@functools.lru_cache(maxsize=16)
def _cached_weights(
    window: tuple[int, ...], blend: str, sigma_scale: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The importance map on ``device``/``dtype``, computed once per window shape (read only)."""
    return _importance_map(window, blend, sigma_scale).to(device, dtype)


def _importance_map(window: tuple[int, ...], blend: str, sigma_scale: float) -> torch.Tensor:
    if blend != "gaussian":
        return torch.ones(tuple(window))
    weights = torch.ones(())
    for size in window:
        x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
        sigma = size * sigma_scale
        weights = weights.unsqueeze(-1) * torch.exp(x**2 / (-2 * sigma**2))
    return weights.clamp_min(max(float(weights.min()), 1e-3))


class GridSampler:
    """Windows on a regular grid over a whole image (for inference).

    Args:
        window: window size; ``0``/``-1`` = whole axis.
        overlap: fraction in ``[0, 1)`` or voxels (see :func:`grid_starts`).
        pad_value: value outside the image.

    Shape:
        :meth:`sample` windows: role → ``(C, *window)``; :meth:`locations`: ``(N, D)`` starts.

    Example:
        >>> from voxelflow.data.cached import CachedSubject
        >>> image = np.zeros((1, 8, 8, 6), np.float32)
        >>> subject = CachedSubject("s", {"image": image}, {"image": "intensity"})
        >>> windows = GridSampler((4, 4, 6), overlap=0.0).sample(subject)
        >>> len(windows), tuple(windows[0]["image"].shape), windows[-1]["location"].tolist()
        (4, (1, 4, 4, 6), [4, 4, 0])
    """

    def __init__(
        self,
        window: Sequence[int],
        *,
        overlap: float | Sequence[float] = 0.5,
        pad_value: float = 0.0,
    ) -> None:
        self.window = tuple(int(w) for w in window)
        self.overlap = overlap
        self.pad_value = float(pad_value)

    def locations(self, spatial_shape: Sequence[int]) -> np.ndarray:
        """Window starts ``(N, D)``."""
        return grid_starts(spatial_shape, resolve_window(self.window, spatial_shape), self.overlap)

    def sample(self, subject: Any) -> list[dict[str, Any]]:
        """Every window of a cached subject: role → tensor ``(C, *window)`` plus ``"location"``."""
        window = resolve_window(self.window, subject.spatial_shape, subject=subject.name)
        out = []
        for start in self.locations(subject.spatial_shape):
            item: dict[str, Any] = {
                role: torch.from_numpy(read_window(array, start, window, pad_value=self.pad_value))
                for role, array in subject.arrays.items()
            }
            item["subject"], item["location"] = subject.name, torch.as_tensor(start)
            out.append(item)
        return out


class GridAggregator:
    """Blend window outputs back into a volume.

    Args:
        spatial_shape: output volume size.
        window: the output window size.
        blend: ``"gaussian"``, ``"mean"`` or ``"crop"``.
        overlap: the grid's overlap (used by ``crop`` to know how much border to drop).
        device: accumulation device (e.g. CPU for huge volumes).
        dtype: accumulation dtype (float32 or float16).
        fill_value: value of voxels no window covered.
        sigma_scale: Gaussian sigma as a fraction of the window.
        starts: the whole grid ``(N, D)`` when known in advance (as :func:`grid_starts` gives):
            the summed weights are then computed once, axis by axis, instead of per window.

    Shape:
        :meth:`add` takes ``(N, *lead, *window)`` (e.g. ``lead = (C,)`` or ``(B, C)``) and
        starts ``(N, D)``; :meth:`result` returns ``(*lead, *spatial_shape)``.

    Example:
        >>> starts = GridSampler((4, 4, 4), overlap=0.5).locations((8, 8, 6))
        >>> aggregator = GridAggregator((8, 8, 6), window=(4, 4, 4), overlap=0.5)
        >>> aggregator.add(torch.ones(len(starts), 2, 4, 4, 4), starts)
        >>> volume = aggregator.result()
        >>> tuple(volume.shape), bool(torch.allclose(volume, torch.ones(())))
        ((2, 8, 8, 6), True)
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        *,
        window: Sequence[int],
        blend: str = "gaussian",
        overlap: float | Sequence[float] = 0.5,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        fill_value: float = 0.0,
        sigma_scale: float = 0.125,
        starts: np.ndarray | None = None,
    ) -> None:
        if blend not in BLENDS:
            raise ConfigError(f"expected blend in {BLENDS}, got {blend!r}")
        self.shape = tuple(int(s) for s in spatial_shape)
        self.window = tuple(int(w) for w in window)
        self.blend, self.device, self.dtype, self.fill_value = (
            blend,
            torch.device(device or "cpu"),
            dtype,
            fill_value,
        )
        self.weights = _cached_weights(self.window, blend, float(sigma_scale), self.device, dtype)
        self.border = self._crop_border(overlap)
        self.sums: torch.Tensor | None = None
        # a known, covering grid: the weight sums are built at the end, slab by slab (no
        # per-window adds, no volume-sized count map); else summed window by window
        self.grid = _cartesian_axes(starts, self.shape, self.window) if blend != "crop" else None
        self.grid_starts = np.asarray(starts).reshape(-1, len(self.shape)) if self.grid else None
        self.added = 0
        self.count = (
            torch.zeros(self.shape, device=self.device, dtype=dtype) if self.grid is None else None
        )

    def _crop_border(self, overlap: float | Sequence[float]) -> list[tuple[int, int]]:
        overlaps = list(overlap) if isinstance(overlap, Sequence) else [overlap] * len(self.window)
        borders = []
        for win, ov in zip(self.window, overlaps):
            interval = max(
                int(win * (1.0 - ov)) if isinstance(ov, float) or ov == 0 else int(win - ov), 1
            )
            dropped = max(win - interval, 0)
            borders.append((dropped // 2, dropped - dropped // 2))
        return borders

    def add(self, outputs: torch.Tensor, starts: torch.Tensor | np.ndarray) -> None:
        """Accumulate ``outputs`` ``(N, *lead, *window)`` at window ``starts`` ``(N, D)``."""
        dims = len(self.shape)
        if tuple(outputs.shape[-dims:]) != self.window:
            raise ShapeError(
                f"expected outputs with window {self.window}, got shape {tuple(outputs.shape)}"
            )
        starts = np.asarray(starts).reshape(-1, dims)
        if self.sums is None:
            lead = tuple(outputs.shape[1:-dims])
            # zeroed, then one add per whole window: faster than writing the part no earlier
            # window touched and adding the rest (short rows, up to four ops per window)
            self.sums = torch.zeros((*lead, *self.shape), device=self.device, dtype=self.dtype)
        outputs = outputs.to(self.device, self.dtype)
        if self.grid is not None:
            self._check_grid_order(starts)
        if self.grid is not None:  # whole windows inside the volume: no clipping, no counts
            for output, start in zip(outputs, starts.tolist()):
                region = self.sums[_box(start, self.window)]
                if self.blend == "mean":
                    region.add_(output)
                else:
                    region.addcmul_(output, self.weights)
            return
        for output, corner in zip(outputs, starts):
            self._add_one(output, [int(s) for s in corner])

    def _check_grid_order(self, starts: np.ndarray) -> None:
        assert self.grid_starts is not None
        expected = self.grid_starts[self.added : self.added + len(starts)]
        if expected.shape != starts.shape or not (expected == starts).all():
            raise ShapeError(
                f"GridAggregator built with starts: expected windows {expected.tolist()} next "
                f"(in the order given), got {starts.tolist()}"
            )
        self.added += len(starts)

    def _add_one(self, output: torch.Tensor, start: list[int]) -> None:
        sums = self.sums
        assert sums is not None  # add() allocates it before the first window
        target, source = [], []
        for axis, (first, win, size) in enumerate(zip(start, self.window, self.shape)):
            low, high = first, first + win
            if self.blend == "crop":
                low += self.border[axis][0] if first > 0 else 0
                high -= self.border[axis][1] if first + win < size else 0
            low, high = max(low, 0), min(high, size)
            target.append(slice(low, high))
            source.append(slice(low - first, high - first))
        region: tuple[EllipsisType | slice, ...] = (..., *target)
        window_part: tuple[EllipsisType | slice, ...] = (..., *source)
        if self.blend == "crop":
            assert self.count is not None  # crop blending keeps a count
            sums[region] = output[window_part]
            self.count[tuple(target)] = 1
            return
        weight = self.weights[tuple(source)]
        if self.blend == "mean":
            sums[region].add_(output[window_part])
        else:
            sums[region].addcmul_(output[window_part], weight)
        if self.count is not None:
            self.count[tuple(target)].add_(weight)

    def result(self) -> torch.Tensor:
        """The blended volume; uncovered voxels get ``fill_value``.

        Normalises in place: call once, after the last :meth:`add`.
        """
        if self.sums is None:
            raise ShapeError("expected at least one add() before result(), got none")
        if self.grid is not None:  # every voxel covered, with a weight > 0: no mask needed
            assert self.grid_starts is not None
            if self.added != len(self.grid_starts):
                raise ShapeError(
                    f"GridAggregator built with starts: expected all {len(self.grid_starts)} "
                    f"windows added before result(), got {self.added}"
                )
            return _divide_by_grid_weights(self.sums, self.weights, self.grid)
        assert self.count is not None
        uncovered = self.count <= 0
        any_uncovered = bool(uncovered.any())
        if self.blend != "crop":
            if any_uncovered:
                self.count.masked_fill_(uncovered, 1.0)
            self.sums.div_(self.count)
        if any_uncovered:
            self.sums.masked_fill_(uncovered, self.fill_value)
        return self.sums


def _cartesian_axes(
    starts: np.ndarray | None, shape: tuple[int, ...], window: tuple[int, ...]
) -> list[np.ndarray] | None:
    """Per-axis starts when ``starts`` ``(N, D)`` is their Cartesian product in lexicographic
    order (as :func:`grid_starts` gives) with the windows covering ``shape`` and inside it;
    else None (weight sums are then accumulated window by window)."""
    if starts is None or len(starts) == 0:
        return None
    starts = np.asarray(starts).reshape(len(starts), -1)
    axes = [np.unique(starts[:, axis]) for axis in range(starts.shape[1])]
    product = np.array(list(itertools.product(*axes))).reshape(-1, starts.shape[1])
    if product.shape != starts.shape or not (product == starts).all():
        return None
    inside = all(a[0] >= 0 and a[-1] + w <= s for a, w, s in zip(axes, window, shape))
    return axes if inside and _axes_cover(axes, shape, window) else None


def _axes_cover(axes: list[np.ndarray], shape: tuple[int, ...], window: tuple[int, ...]) -> bool:
    """Whether windows at the Cartesian product of ``axes`` cover every voxel of ``shape``."""
    for starts, win, size in zip(axes, window, shape):
        covered = np.zeros(size, dtype=bool)
        for start in starts:
            covered[start : start + win] = True
        if not covered.all():
            return False
    return True


def _grid_weight_sum(
    shape: Sequence[int], weights: torch.Tensor, axes: Sequence[np.ndarray], *, first_axis: int = 0
) -> torch.Tensor:
    """Sum of ``weights`` placed at every start of the grid ``axes[0] × axes[1] × ...``; the
    windows must cover ``shape`` (nothing is zeroed: each element is first written, then added).

    Summed one axis at a time, last axis first (the grid is a Cartesian product): fewer
    additions than one window-sized add per window. Axes before ``first_axis`` keep the window
    size (their sum is left to the caller).

    Shape:
        weights ``(*window)``; returns ``(*window[:first_axis], *shape[first_axis:])``
    """
    partial = weights
    for axis in reversed(range(first_axis, len(shape))):
        size = list(partial.shape)
        size[axis] = int(shape[axis])
        spread = torch.empty(size, device=weights.device, dtype=weights.dtype)
        win, written = weights.shape[axis], 0
        for start in (int(s) for s in axes[axis]):  # sorted: [start, written) already holds sums
            overlap = min(written, start + win) - start
            if overlap > 0:
                spread.narrow(axis, start, overlap).add_(partial.narrow(axis, 0, overlap))
            fresh = max(overlap, 0)
            spread.narrow(axis, start + fresh, win - fresh).copy_(partial.narrow(axis, fresh, win - fresh))
            written = start + win
        partial = spread
    return partial


def _divide_by_grid_weights(
    sums: torch.Tensor, weights: torch.Tensor, axes: Sequence[np.ndarray]
) -> torch.Tensor:
    """Divide ``sums`` in place by the grid's summed weights, one slab of the first axis at a
    time: a slab's weights are the sum of the few windows covering it along that axis.

    Shape:
        sums ``(*lead, *shape)``, weights ``(*window)``; returns ``sums``
    """
    dims, win = weights.ndim, weights.shape[0]
    rows = _MirroredRows(sums.shape[-dims:], weights, axes)
    starts = [int(s) for s in axes[0]]
    # slab edges: where a window begins or ends, and where it crosses its middle row (the
    # mirrored half of the weight sums is another tensor)
    edges = sorted({0, sums.shape[-dims], *starts, *(s + win for s in starts),
                    *(s + rows.half for s in starts)})
    slabs = [(low, high, [s for s in starts if s <= low and high <= s + win])
             for low, high in itertools.pairwise(edges)]
    # one scratch slab for the sums of several windows; a slab one window covers is a view
    longest = max((high - low for low, high, covering in slabs if len(covering) > 1), default=0)
    scratch = rows.lower.new_empty((longest, *rows.lower.shape[1:])) if longest else None
    axis = sums.ndim - dims
    for low, high, covering in slabs:
        parts = [rows(low - start, high - start) for start in covering]
        slab = parts[0]
        if len(parts) > 1:
            assert scratch is not None
            slab = torch.add(parts[0], parts[1], out=scratch[: high - low])
            for part in parts[2:]:
                slab.add_(part)
        sums.narrow(axis, low, high - low).div_(slab)
    return sums


class _MirroredRows:
    """The grid's weights summed along every axis but the first, ``(w0, S1, ...)``, built for
    the first half of the window only: the importance map is symmetric along axis 0, so row
    ``r`` equals row ``w0 - 1 - r`` (the second half is a flipped copy, not a second spread)."""

    def __init__(
        self, shape: Sequence[int], weights: torch.Tensor, axes: Sequence[np.ndarray]
    ) -> None:
        win = weights.shape[0]
        self.half = (win + 1) // 2
        self.lower = _grid_weight_sum(shape, weights[: self.half], axes, first_axis=1)
        self.upper = self.lower[: win - self.half].flip(0)  # rows half .. w0 - 1

    def __call__(self, first: int, end: int) -> torch.Tensor:
        """Rows ``[first, end)``, all on one side of the middle (a view)."""
        if end <= self.half:
            return self.lower[first:end]
        assert first >= self.half, (first, end)
        return self.upper[first - self.half : end - self.half]


def _flip_tta(
    network: Callable[[torch.Tensor], torch.Tensor], dims: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    axes = list(range(2, 2 + dims))

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        combos = [c for r in range(dims + 1) for c in itertools.combinations(axes, r)]
        for flip in combos:
            y = network(torch.flip(x, flip) if flip else x)
            y = torch.flip(y, flip) if flip else y
            total = y if total is None else total + y
        assert total is not None  # combos holds at least the identity
        return total / len(combos)

    return averaged


def _pad_for_windows(
    image: torch.Tensor, window: Sequence[int], out_window: Sequence[int]
) -> torch.Tensor:
    """Zero-pad so the input window of every output window exists (also windows > image)."""
    spatial = image.shape[2:]
    margin = [(w - o) // 2 for w, o in zip(window, out_window)]
    pad_high = [
        m + max(o - s, 0) + (w - o - 2 * m)
        for m, o, s, w in zip(margin, out_window, spatial, window)
    ]
    padding = [p for low, high in zip(reversed(margin), reversed(pad_high)) for p in (low, high)]
    return F.pad(image, padding) if any(padding) else image


@torch.no_grad()
def sliding_window(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    *,
    overlap: float | Sequence[float] = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    device: torch.device | str | None = None,
    accumulate_device: torch.device | str | None = None,
    accumulate_dtype: torch.dtype = torch.float32,
    fill_value: float = 0.0,
    flip_tta: bool = False,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Run ``network`` over windows of ``image`` and blend the outputs.

    Args:
        network: maps ``(N, C, *window)`` to ``(N, C_out, *out_window)``; may define
            ``output_size(window) -> out_window`` (valid convolutions): outputs are centred.
        image: input batch.
        window: window size; ``0``/``-1`` = whole axis.
        overlap: fraction in ``[0, 1)`` or voxels.
        blend: ``"gaussian"``, ``"mean"`` or ``"crop"``.
        batch_size: windows per network call.
        device: where the network runs (default: the image's device).
        accumulate_device: where outputs are blended (default: ``device``; CPU for huge volumes).
        accumulate_dtype: float32 or float16 accumulation.
        fill_value: value of voxels no window covers.
        flip_tta: average over all flips of the spatial axes (test-time augmentation).
        sigma_scale: Gaussian sigma as a fraction of the window.

    Returns:
        ``(B, C_out, *spatial)`` on ``accumulate_device``, float32 (or ``accumulate_dtype``).

    Raises:
        ShapeError: image not ``(B, C, *spatial)`` matching the window's dimensionality.

    Shape:
        image: ``(B, C, *spatial)``; returns ``(B, C_out, *spatial)``

    Example:
        >>> network = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)
        >>> sliding_window(network, torch.zeros(1, 1, 20, 20, 12), window=[8, 8, 8]).shape
        torch.Size([1, 2, 20, 20, 12])
    """
    if image.ndim < 3:
        raise ShapeError(f"expected image (B, C, *spatial), got shape {tuple(image.shape)}")
    spatial = tuple(image.shape[2:])
    window = resolve_window(window, spatial, what="sliding window")
    device = torch.device(device) if device is not None else image.device
    out_window = (
        tuple(int(s) for s in network.output_size(window))
        if hasattr(network, "output_size")
        else window
    )
    with timed_stage("window"):  # voxelflow infer's per-subject seconds_window
        starts = grid_starts(spatial, out_window, overlap)
        aggregator = GridAggregator(
            tuple(max(s, o) for s, o in zip(spatial, out_window)),
            window=out_window,
            blend=blend,
            overlap=overlap,
            device=accumulate_device or device,
            dtype=accumulate_dtype,
            fill_value=fill_value,
            sigma_scale=sigma_scale,
            starts=starts,
        )
        run = _flip_tta(network, len(spatial)) if flip_tta else network
        padded = _pad_for_windows(image, window, out_window)
        _run_windows(run, padded, starts, window, aggregator, batch_size, device)
        result = aggregator.result()[_box([0] * len(spatial), spatial)]
        if result.is_cuda and stages_timed():  # the stage ends when the GPU is done
            torch.cuda.synchronize(result.device)
    return result


def _box(start: Sequence[int], window: Sequence[int]) -> tuple[EllipsisType | slice, ...]:
    """The index of the window at ``start`` in a ``(..., *spatial)`` tensor."""
    return (..., *[slice(int(s), int(s) + w) for s, w in zip(start, window)])


def _run_windows(
    run: Callable[[torch.Tensor], torch.Tensor],
    padded: torch.Tensor,
    starts: np.ndarray,
    window: tuple[int, ...],
    aggregator: GridAggregator,
    batch_size: int,
    device: torch.device,
) -> None:
    """Cut the windows at ``starts`` ``(N, D)`` from ``padded`` ``(B, C, *spatial)``, run them
    ``batch_size`` windows per call and hand the outputs to ``aggregator``."""
    images = padded.shape[0]
    per_call = max(1, batch_size // images)
    # one input buffer reused for every call (no fresh allocation and page faults per batch)
    buffer = padded.new_empty((per_call * images, *padded.shape[1:2], *window))
    with window_bar(len(starts)) as bar:  # drawn only under window_progress (CLI, zoo, demo)
        for first in range(0, len(starts), per_call):
            chunk = starts[first : first + per_call]
            windows = [padded[_box(start, window)] for start in chunk]
            batch = torch.cat(windows, out=buffer[: len(chunk) * images]).to(device)
            outputs = run(batch)
            aggregator.add(outputs.reshape(len(chunk), images, *outputs.shape[1:]), chunk)
            bar.update(len(chunk))
