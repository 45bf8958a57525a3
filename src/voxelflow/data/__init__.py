"""voxelflow.data: table rows → preprocessed, cached subjects for the samplers."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxelflow.data.cached import CachedSubject, compute_class_locations
    from voxelflow.data.dataset import (
        PreprocessedDataset,
        default_kind,
        load_fitted_state,
        preprocess_subject,
        save_fitted_state,
    )

_EXPORTS = {
    **dict.fromkeys(["CachedSubject", "compute_class_locations"], "voxelflow.data.cached"),
    **dict.fromkeys(
        ["PreprocessedDataset", "default_kind", "load_fitted_state", "preprocess_subject",
         "save_fitted_state"],
        "voxelflow.data.dataset",
    ),
}

__all__ = [
    "CachedSubject",
    "PreprocessedDataset",
    "compute_class_locations",
    "default_kind",
    "load_fitted_state",
    "preprocess_subject",
    "save_fitted_state",
]


def __getattr__(name: str) -> object:
    """Import the submodule of ``name`` on first use (training needs no reader/writer packages)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
