"""voxelflow.applications: the domain-specific objects the generic trainer drives.

``APPLICATIONS`` maps the config's ``application`` name to an :class:`Application` subclass.
"""

from __future__ import annotations

from voxelflow.applications.base import (
    Application,
    EvaluationOptions,
    InferenceContext,
    InferenceItem,
    OptimizationSettings,
    OptimizerSpecs,
    Prediction,
    TrainingContext,
)
from voxelflow.registry import Registry

APPLICATIONS: Registry[type[Application]] = Registry("application")

from voxelflow.applications.autoencoder.application import AutoencoderApplication  # noqa: E402
from voxelflow.applications.classification.application import ClassificationApplication  # noqa: E402
from voxelflow.applications.gan.application import GanApplication  # noqa: E402
from voxelflow.applications.regression.application import RegressionApplication  # noqa: E402
from voxelflow.applications.segmentation.application import SegmentationApplication  # noqa: E402

APPLICATIONS.add(
    "segmentation", SegmentationApplication, description="image → class scores per voxel"
)
APPLICATIONS.add(
    "regression", RegressionApplication,
    description="image → image (MR → CT, denoising, super-resolution)",
)
APPLICATIONS.add(
    "classification", ClassificationApplication,
    description="image → class or scalar per subject (predictions.csv)",
)
APPLICATIONS.add(
    "autoencoder", AutoencoderApplication,
    description="image → latent → image (reconstruct, encode, sample, interpolate)",
)
APPLICATIONS.add(
    "gan", GanApplication, description="noise (+ conditioning) → image, adversarially trained"
)

__all__ = [
    "APPLICATIONS",
    "Application",
    "AutoencoderApplication",
    "ClassificationApplication",
    "EvaluationOptions",
    "GanApplication",
    "InferenceContext",
    "InferenceItem",
    "OptimizationSettings",
    "OptimizerSpecs",
    "Prediction",
    "RegressionApplication",
    "SegmentationApplication",
    "TrainingContext",
]
