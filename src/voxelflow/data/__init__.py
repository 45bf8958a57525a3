"""voxelflow.data: table rows → preprocessed, cached subjects for the samplers."""

from voxelflow.data.cached import CachedSubject, compute_class_locations
from voxelflow.data.dataset import (
    PreprocessedDataset,
    default_kind,
    load_fitted_state,
    preprocess_subject,
    save_fitted_state,
)

__all__ = [
    "CachedSubject",
    "PreprocessedDataset",
    "compute_class_locations",
    "default_kind",
    "load_fitted_state",
    "preprocess_subject",
    "save_fitted_state",
]
