"""Medical image input/output: images, readers, dataset tables, the preprocessing cache."""

from voxelflow.io.image import Image, Subject, check_same_grid, grid_difference
from voxelflow.io.readers import READERS, RawImage, read_image, register_reader
from voxelflow.io.writers import WRITERS, register_writer, write_image

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
