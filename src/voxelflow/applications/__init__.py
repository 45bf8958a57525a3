"""voxelflow.applications: the domain-specific objects the generic trainer drives.

``APPLICATIONS`` maps the config's ``application`` name to an :class:`Application` subclass.
"""

from __future__ import annotations

from voxelflow.applications.base import (
    Application,
    InferenceContext,
    OptimizationSettings,
    OptimizerSpecs,
    TrainingContext,
)
from voxelflow.registry import Registry

APPLICATIONS: Registry[type[Application]] = Registry("application")

from voxelflow.applications.segmentation import SegmentationApplication  # noqa: E402

APPLICATIONS.add(
    "segmentation", SegmentationApplication, description="image → class scores per voxel"
)

__all__ = [
    "APPLICATIONS",
    "Application",
    "InferenceContext",
    "OptimizationSettings",
    "OptimizerSpecs",
    "SegmentationApplication",
    "TrainingContext",
]
