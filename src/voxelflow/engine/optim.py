"""Deprecated location of :mod:`voxelflow.optim` (moved down to rank 1 so applications may use it)."""

import warnings

from voxelflow.optim import *  # noqa: F403  (re-export for code written against the old path)
from voxelflow.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler"]

warnings.warn(
    "voxelflow.engine.optim moved to voxelflow.optim; import from there",
    DeprecationWarning,
    stacklevel=2,
)
