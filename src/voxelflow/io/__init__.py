"""Medical image input/output: images, readers, dataset tables, the preprocessing cache."""

from voxelflow.io.image import Image, Subject, check_same_grid, grid_difference

__all__ = ["Image", "Subject", "check_same_grid", "grid_difference"]
