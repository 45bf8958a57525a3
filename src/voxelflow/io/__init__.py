"""Medical image input/output: images, readers, dataset tables, the preprocessing cache."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxelflow.io.image import Image, Subject, check_same_grid, grid_difference
    from voxelflow.io.readers import READERS, RawImage, read_image, register_reader
    from voxelflow.io.writers import WRITERS, register_writer, write_image

_EXPORTS = {
    **dict.fromkeys(["Image", "Subject", "check_same_grid", "grid_difference"], "voxelflow.io.image"),
    **dict.fromkeys(["READERS", "RawImage", "read_image", "register_reader"], "voxelflow.io.readers"),
    **dict.fromkeys(["WRITERS", "register_writer", "write_image"], "voxelflow.io.writers"),
}

__all__ = [
    "READERS",
    "WRITERS",
    "Image",
    "RawImage",
    "Subject",
    "check_same_grid",
    "grid_difference",
    "read_image",
    "register_reader",
    "register_writer",
    "write_image",
]


def __getattr__(name: str) -> object:
    """Import the submodule of ``name`` on first use (training needs no reader/writer packages)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
