"""voxelflow.sampling: window samplers, the patch queue, grid and resize inference.

Samplers are registered in :data:`SAMPLERS` by name (``uniform``, ``weighted``, ``balanced``,
``resize``); a config names one as ``{name: balanced, window: [96, 96, 96], ...}``.
"""

from __future__ import annotations

from voxelflow.registry import Registry
from voxelflow.sampling.base import Sampler
from voxelflow.sampling.grid import GridAggregator, GridSampler, sliding_window
from voxelflow.sampling.queue import PatchQueue
from voxelflow.sampling.random import BalancedSampler, UniformSampler, WeightedSampler
from voxelflow.sampling.resize import ResizeAggregator, ResizeSampler

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
SAMPLERS.add("uniform", UniformSampler)
SAMPLERS.add("weighted", WeightedSampler)
SAMPLERS.add("balanced", BalancedSampler)
SAMPLERS.add("resize", ResizeSampler)

__all__ = [
    "SAMPLERS",
    "BalancedSampler",
    "GridAggregator",
    "GridSampler",
    "PatchQueue",
    "ResizeAggregator",
    "ResizeSampler",
    "Sampler",
    "UniformSampler",
    "WeightedSampler",
    "sliding_window",
]
