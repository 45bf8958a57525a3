"""voxelflow: deep learning on medical images with PyTorch.

From a folder of NIfTI/DICOM scans to a trained, evaluated, shareable model with one config file.
"""

from __future__ import annotations

__version__ = "0.1.0"

from voxelflow.errors import (
    ConfigError,
    DataError,
    GeometryError,
    ShapeError,
    VoxelflowError,
)
from voxelflow.io.image import Image, Subject

__all__ = [
    "ConfigError",
    "DataError",
    "GeometryError",
    "Image",
    "ShapeError",
    "Subject",
    "VoxelflowError",
    "__version__",
]
