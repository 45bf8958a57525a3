"""voxelflow: deep learning on medical images with PyTorch.

From a folder of NIfTI/DICOM scans to a trained, evaluated, shareable model with one config file.
Every public name is exported here, flat, and listed in ``__all__``; they are imported on first
use, so ``import voxelflow`` stays light (torch is loaded only when a name needs it).

Example:
    >>> import voxelflow as vf
    >>> experiment = vf.Experiment.from_dict({"network": {"name": "unet", "channels": [4, 8]}})
    >>> experiment.config.application
    'segmentation'
    >>> "unet" in vf.NETWORKS.names() and "dice_ce" in vf.LOSSES.names()
    True
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that wait for work sleep instead of spinning, unless the user chose otherwise.
# Read once, when PyTorch's OpenMP runtime loads, so it is set before anything imports torch.
# Spinning threads are what make two trainings on one small machine 4x slower than one (each
# takes the other's cores); sleeping costs nothing measurable alone (docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from voxelflow.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GeometryError,
    RegistryError,
    SecurityError,
    ShapeError,
    VoxelflowError,
)
from voxelflow.version import __version__

#: public name → ``"module"`` (same name there) or ``"module:name"``; imported on first access.
_EXPORTS: dict[str, str] = {
    # the Python API and the config
    "Experiment": "voxelflow.api",
    "ExperimentConfig": "voxelflow.config.schema:ExperimentConfig",
    "Component": "voxelflow.config.schema",
    "load_experiment": "voxelflow.config.load",
    "dump_experiment": "voxelflow.config.load",
    "Registry": "voxelflow.registry",
    # images and files
    "Image": "voxelflow.io.image",
    "Subject": "voxelflow.io.image",
    "check_same_grid": "voxelflow.io.image",
    "read_image": "voxelflow.io.readers",
    "write_image": "voxelflow.io.writers",
    "load_table": "voxelflow.io.table",
    "make_phantom": "voxelflow.synthetic",
    "phantom_affine": "voxelflow.synthetic",
    # preprocessing and augmentation
    "Preprocessor": "voxelflow.transforms.preprocess",
    "invert_preprocessing": "voxelflow.transforms.preprocess:invert",
    "NORMALIZERS": "voxelflow.transforms.normalize",
    "AUGMENTATIONS": "voxelflow.transforms.compose",
    "Compose": "voxelflow.transforms.compose",
    "build_augmentation": "voxelflow.transforms.compose",
    # sampling and sliding windows
    "SAMPLERS": "voxelflow.sampling",
    "UniformSampler": "voxelflow.sampling",
    "WeightedSampler": "voxelflow.sampling",
    "BalancedSampler": "voxelflow.sampling",
    "ResizeSampler": "voxelflow.sampling",
    "ResizeAggregator": "voxelflow.sampling",
    "GridSampler": "voxelflow.sampling",
    "GridAggregator": "voxelflow.sampling",
    "PatchQueue": "voxelflow.sampling",
    "sliding_window": "voxelflow.sampling",
    "CachedSubject": "voxelflow.data.cached",
    # networks, losses, training
    "NETWORKS": "voxelflow.networks",
    "build_network": "voxelflow.networks",
    "LOSSES": "voxelflow.losses",
    "build_loss": "voxelflow.losses",
    "OPTIMIZERS": "voxelflow.optim",
    "SCHEDULERS": "voxelflow.optim",
    "APPLICATIONS": "voxelflow.applications",
    "Prediction": "voxelflow.applications.base",
    "Trainer": "voxelflow.engine.trainer",
    "TrainerOptions": "voxelflow.engine.trainer",
    # metrics and evaluation
    "METRICS": "voxelflow.metrics",
    "segmentation_metrics": "voxelflow.metrics",
    "regression_metrics": "voxelflow.metrics",
    "dice": "voxelflow.metrics",
    "jaccard": "voxelflow.metrics",
    "hausdorff_distance": "voxelflow.metrics",
    "average_symmetric_surface_distance": "voxelflow.metrics",
    "normalized_surface_dice": "voxelflow.metrics",
    "evaluate_folders": "voxelflow.metrics.evaluate",
    "evaluate_images": "voxelflow.metrics.evaluate",
    # self-configuration
    "plan": "voxelflow.planning.run",
    "fingerprint_dataset": "voxelflow.planning.fingerprint",
    # model zoo and export
    "install_model": "voxelflow.zoo.store:install",
    "resolve_model": "voxelflow.zoo.store",
    "pack_run": "voxelflow.zoo.pack",
    "export_network": "voxelflow.zoo.export",
}

__all__ = [  # kept equal to the errors above plus _EXPORTS by tests/test_api.py
    "APPLICATIONS",
    "AUGMENTATIONS",
    "LOSSES",
    "METRICS",
    "NETWORKS",
    "NORMALIZERS",
    "OPTIMIZERS",
    "SAMPLERS",
    "SCHEDULERS",
    "BalancedSampler",
    "CachedSubject",
    "CheckpointError",
    "Component",
    "Compose",
    "ConfigError",
    "DataError",
    "Experiment",
    "ExperimentConfig",
    "GeometryError",
    "GridAggregator",
    "GridSampler",
    "Image",
    "PatchQueue",
    "Prediction",
    "Preprocessor",
    "Registry",
    "RegistryError",
    "ResizeAggregator",
    "ResizeSampler",
    "SecurityError",
    "ShapeError",
    "Subject",
    "Trainer",
    "TrainerOptions",
    "UniformSampler",
    "VoxelflowError",
    "WeightedSampler",
    "__version__",
    "average_symmetric_surface_distance",
    "build_augmentation",
    "build_loss",
    "build_network",
    "check_same_grid",
    "dice",
    "dump_experiment",
    "evaluate_folders",
    "evaluate_images",
    "export_network",
    "fingerprint_dataset",
    "hausdorff_distance",
    "install_model",
    "invert_preprocessing",
    "jaccard",
    "load_experiment",
    "load_table",
    "make_phantom",
    "normalized_surface_dice",
    "pack_run",
    "phantom_affine",
    "plan",
    "read_image",
    "regression_metrics",
    "resolve_model",
    "segmentation_metrics",
    "sliding_window",
    "write_image",
]


def __getattr__(name: str) -> Any:
    """Import an exported name on first access (PEP 562) and keep it in the module."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'voxelflow' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real objects
    from voxelflow.api import Experiment
    from voxelflow.applications import APPLICATIONS
    from voxelflow.applications.base import Prediction
    from voxelflow.config.load import dump_experiment, load_experiment
    from voxelflow.config.schema import Component, ExperimentConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.engine.trainer import Trainer, TrainerOptions
    from voxelflow.io.image import Image, Subject, check_same_grid
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import load_table
    from voxelflow.io.writers import write_image
    from voxelflow.losses import LOSSES, build_loss
    from voxelflow.metrics import (
        METRICS,
        average_symmetric_surface_distance,
        dice,
        hausdorff_distance,
        jaccard,
        normalized_surface_dice,
        regression_metrics,
        segmentation_metrics,
    )
    from voxelflow.metrics.evaluate import evaluate_folders, evaluate_images
    from voxelflow.networks import NETWORKS, build_network
    from voxelflow.optim import OPTIMIZERS, SCHEDULERS
    from voxelflow.registry import Registry
    from voxelflow.sampling import (
        SAMPLERS,
        BalancedSampler,
        GridAggregator,
        GridSampler,
        PatchQueue,
        ResizeAggregator,
        ResizeSampler,
        UniformSampler,
        WeightedSampler,
        sliding_window,
    )
    from voxelflow.synthetic import make_phantom, phantom_affine
    from voxelflow.transforms.compose import AUGMENTATIONS, Compose, build_augmentation
    from voxelflow.transforms.normalize import NORMALIZERS
    from voxelflow.transforms.preprocess import Preprocessor
    from voxelflow.transforms.preprocess import invert as invert_preprocessing
    from voxelflow.zoo.export import export_network
    from voxelflow.zoo.pack import pack_run
    from voxelflow.zoo.store import install as install_model
    from voxelflow.zoo.store import resolve_model
