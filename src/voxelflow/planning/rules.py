"""The planning decisions as small pure functions: spacing, network topology, memory, batch size.

Per-axis lists are in voxel-axis order (after reorientation). The spacing and topology rules
follow nnU-Net (Isensee et al., Nature Methods 2021) so that a plan can be compared with
nnU-Net's on the same data; the memory model is voxelflow's own, in bytes, calibrated against
the measured peak of a forward + backward pass of :class:`~voxelflow.networks.unet.UNet`.

Example:
    >>> spacing, why = target_spacing([[0.8, 0.8, 5.0], [0.8, 0.8, 3.0], [0.7, 0.7, 5.0]],
    ...                               [[512, 512, 40]] * 3)
    >>> [round(s, 2) for s in spacing]
    [0.8, 0.8, 3.4]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: an axis is anisotropic when its spacing is more than this times the others' (nnU-Net: 3)
ANISOTROPY_RATIO = 3.0
#: smallest edge of a bottleneck feature map (nnU-Net: 4)
BOTTLENECK_EDGE = 4
#: features of the first level and the most any level gets
BASE_FEATURES = 32
MAX_FEATURES_3D = 320
MAX_FEATURES_2D = 512
#: the batch covers at most this fraction of the dataset's voxels (nnU-Net's overfitting guard)
MAX_DATASET_FRACTION = 0.05
MIN_BATCH_SIZE = 2
#: training windows start from a window of this many voxels before shrinking to the budget
INITIAL_WINDOW_VOXELS = {3: 256**3, 2: 2048**2}


def target_spacing(
    spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]
) -> tuple[list[float], str]:
    """The training spacing (mm per voxel axis) and a sentence saying why.

    nnU-Net's rule: the median spacing per axis; when the coarsest axis is more than 3× the
    others *and* has fewer than a third of their voxels, that axis takes the 10th percentile of
    its spacings instead (finer, fewer interpolation artefacts), but never finer than the
    coarsest other axis.

    Args:
        spacings: per subject, the spacing of each axis.
        shapes: per subject, the shape (after cropping to the body) of each axis.
    """
    all_spacings = np.asarray(spacings, dtype=np.float64)
    target = np.percentile(all_spacings, 50, axis=0)
    sizes = np.percentile(np.asarray(shapes, dtype=np.float64), 50, axis=0)
    median_text = "×".join(f"{s:.3g}" for s in target)
    if len(target) < 2:
        return target.tolist(), f"median spacing {median_text}"
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    ratio = target[worst] / max(target[i] for i in others)
    aniso_spacing = ratio > ANISOTROPY_RATIO
    aniso_voxels = sizes[worst] * ANISOTROPY_RATIO < min(sizes[i] for i in others)
    if not (aniso_spacing and aniso_voxels):
        kept = f"; axis {worst} kept at the median: ratio {ratio:.2g} ≤ {ANISOTROPY_RATIO:g}"
        if aniso_spacing:
            kept = f"; axis {worst} kept at the median: it has enough voxels ({sizes[worst]:.0f})"
        return target.tolist(), f"median spacing {median_text}{kept}"
    percentile = float(np.percentile(all_spacings[:, worst], 10))
    finest_other = max(target[i] for i in others)
    value = max(percentile, finest_other + 1e-5) if percentile < finest_other else percentile
    target[worst] = value
    return target.tolist(), (
        f"median spacing {median_text}; axis {worst} at its 10th percentile {value:.3g}: "
        f"ratio {ratio:.2g} > {ANISOTROPY_RATIO:g} and {sizes[worst]:.0f} voxels < a third of the others"
    )


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> list[int]:
    """The shape of ``shape`` voxels of ``spacing`` resampled to ``target`` (same field of view)."""
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target)]


@dataclass(frozen=True)
class Topology:
    """A U-Net's per-level strides and kernel sizes for one window.

    Attributes:
        window: the window, a multiple of ``size_multiple`` on every axis.
        strides: per level, per axis (level 0 is all ones).
        kernel_sizes: per level, per axis (1 along an axis still too coarse to convolve).
        size_multiple: product of the strides per axis.
    """

    window: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]

    @property
    def levels(self) -> int:
        """Number of resolution levels (encoder stages)."""
        return len(self.strides)

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """What every window size must be a multiple of."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(len(self.window)))

    @property
    def bottleneck(self) -> tuple[int, ...]:
        """The bottleneck feature-map size."""
        return tuple(w // m for w, m in zip(self.window, self.size_multiple))


def topology(
    spacing: Sequence[float], window: Sequence[int], *, edge: int = BOTTLENECK_EDGE
) -> Topology:
    """Strides and kernels that downsample ``window`` until the bottleneck is about ``edge`` voxels.

    At each level only the axes whose current spacing is within 2× of the finest are halved
    (so thick slices are not pooled until the in-plane resolution has caught up), an axis stops
    once it is below ``2 * edge`` voxels, and a lone remaining axis needs ``3 * edge``. Kernels
    become 3 on an axis once its spacing is within 2× of the finest (1 before: anisotropic
    kernels). The window is then padded up to the stride multiple.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(w) for w in window]
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    kernel = [1] * dims
    while True:
        poolable = [a for a in range(dims) if current_size[a] >= 2 * edge]
        if not poolable:
            break
        finest = min(current_spacing[a] for a in poolable)
        poolable = [a for a in poolable if current_spacing[a] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * edge:
            break
        if not poolable:
            break
        finest_all = min(current_spacing)
        kernel = [
            3 if k == 3 or current_spacing[a] / finest_all < 2 else 1 for a, k in enumerate(kernel)
        ]
        stride = tuple(2 if a in poolable else 1 for a in range(dims))
        for a in poolable:
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(stride)
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)  # the bottleneck's own convolutions
    multiple = [math.prod(s[a] for s in strides) for a in range(dims)]
    padded = tuple(_pad_to_multiple(int(w), m) for w, m in zip(window, multiple))
    return Topology(padded, tuple(strides), tuple(kernels))


def _pad_to_multiple(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``size``."""
    padded = size + multiple - size % multiple
    return padded - multiple if size % multiple == 0 else padded


def features_per_level(levels: int, dims: int, base: int = BASE_FEATURES) -> list[int]:
    """32, 64, 128 ... capped at 320 (3D) or 512 (2D); scaled by ``base / 32``."""
    cap = (MAX_FEATURES_3D if dims == 3 else MAX_FEATURES_2D) * base // BASE_FEATURES
    return [min(cap, base * 2**i) for i in range(levels)]


def feature_map_elements(
    topo: Topology,
    in_channels: int,
    out_channels: int,
    *,
    num_convs: int = 2,
    base_features: int = BASE_FEATURES,
) -> int:
    """Elements of every convolution output of the U-Net for one window (batch 1).

    Encoder: ``num_convs`` outputs per level at that level's resolution; decoder: the
    upsampled map plus ``num_convs`` outputs per level; the 1×1 head at full resolution.
    """
    features = features_per_level(topo.levels, len(topo.window), base_features)
    size = [float(w) for w in topo.window]
    sizes = []
    total = 0.0
    for level, stride in enumerate(topo.strides):
        size = [math.ceil(s / st) for s, st in zip(size, stride)]
        sizes.append(math.prod(size))
        total += num_convs * features[level] * sizes[-1]
    for level in range(topo.levels - 2, -1, -1):
        total += (1 + num_convs) * features[level] * sizes[level]
    total += out_channels * sizes[0] + in_channels * sizes[0]
    return int(total)


@dataclass(frozen=True)
class MemoryModel:
    """Training memory of a U-Net step in bytes: ``batch × elements × bytes_per_element + fixed``.

    ``bytes_per_element`` covers what a forward pass keeps for backward per convolution output
    (convolution, normalisation and activation outputs) plus the gradients alive during backward;
    ``fixed`` covers the framework (weights, optimiser state, CUDA context). The defaults are
    calibrated by ``tests/plan/test_memory_model.py`` against a measured peak.
    """

    bytes_per_element: float
    fixed_bytes: float
    base_features: int = BASE_FEATURES

    def estimate(
        self, topo: Topology, batch_size: int, in_channels: int, out_channels: int
    ) -> float:
        """Estimated peak bytes of one training step."""
        elements = feature_map_elements(
            topo, in_channels, out_channels, base_features=self.base_features
        )
        return batch_size * elements * self.bytes_per_element + self.fixed_bytes


#: float32 on the CPU (measured: forward + backward of voxelflow's UNet)
CPU_FP32 = MemoryModel(bytes_per_element=11.5, fixed_bytes=0.3e9)
#: a CPU run is limited by compute, not memory: half the features (16, 32 ... 160)
CPU_FEATURES = 16
#: mixed precision on a CUDA GPU: half-precision activations (nnU-Net fits 560e6 elements
#: at batch 2 in 8 GB: ~7 bytes per element)
GPU_AMP = MemoryModel(bytes_per_element=6.6, fixed_bytes=0.6e9)


def initial_window(spacing: Sequence[float], median_shape: Sequence[int]) -> list[int]:
    """A window with the spacing's aspect ratio (equal mm per axis), large, clipped to the median shape."""
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    volume = INITIAL_WINDOW_VOXELS[len(spacing)]
    scale = (volume / np.prod(inverse)) ** (1.0 / len(spacing))
    return [int(min(round(i * scale), m)) for i, m in zip(inverse, median_shape)]


@dataclass(frozen=True)
class WindowPlan:
    """The planned window, its topology, the batch size and the memory they need."""

    topology: Topology
    batch_size: int
    estimated_bytes: float
    reason: str


def plan_window(
    spacing: Sequence[float],
    median_shape: Sequence[int],
    *,
    budget_bytes: float,
    in_channels: int,
    out_channels: int,
    dataset_voxels: float,
    model: MemoryModel,
    min_batch: int = MIN_BATCH_SIZE,
) -> WindowPlan:
    """The largest window (with the spacing's aspect ratio) whose training step at batch
    ``min_batch`` fits ``budget_bytes``; the extra room goes to the batch size.

    The axis reduced first is the one largest relative to the median shape. The batch is
    capped so that one batch covers at most 5 % of the dataset's voxels.

    Raises:
        ValueError: when even the smallest window (one bottleneck-sized block) does not fit;
            the message gives the minimum budget.
    """
    window = initial_window(spacing, median_shape)
    topo = topology(spacing, window)
    estimate = model.estimate(topo, min_batch, in_channels, out_channels)
    while estimate > budget_bytes:
        sizes = list(topo.window)
        axis = int(np.argmax([w / m for w, m in zip(sizes, median_shape)]))
        multiple = topo.size_multiple[axis]
        trial = list(sizes)
        trial[axis] -= multiple
        multiple = topology(spacing, trial).size_multiple[axis] if trial[axis] > 0 else multiple
        sizes[axis] -= multiple
        if sizes[axis] < 2 * BOTTLENECK_EDGE and all(s <= 2 * BOTTLENECK_EDGE for s in sizes):
            smallest = topology(spacing, [2 * BOTTLENECK_EDGE] * len(spacing))
            need = model.estimate(smallest, min_batch, in_channels, out_channels)
            raise ValueError(
                f"a memory budget of {budget_bytes / 1e9:.2f} GB is too small for the smallest "
                f"sensible window {list(smallest.window)} at batch {min_batch}: it needs "
                f"{need / 1e9:.2f} GB"
            )
        sizes[axis] = max(sizes[axis], 1)
        topo = topology(spacing, sizes)
        estimate = model.estimate(topo, min_batch, in_channels, out_channels)
    per_sample = (estimate - model.fixed_bytes) / min_batch
    batch = round((budget_bytes - model.fixed_bytes) / per_sample)
    cap = round(dataset_voxels * MAX_DATASET_FRACTION / math.prod(topo.window))
    batch_size = max(min(batch, cap), min_batch)
    reason = (
        f"window {list(topo.window)} at batch {batch_size}: estimated "
        f"{model.estimate(topo, batch_size, in_channels, out_channels) / 1e9:.2f} GB of a "
        f"{budget_bytes / 1e9:.3g} GB budget"
    )
    if batch_size == cap and cap > min_batch:
        reason += " (batch capped: one batch covers at most 5 % of the dataset)"
    return WindowPlan(
        topo, batch_size, model.estimate(topo, batch_size, in_channels, out_channels), reason
    )
