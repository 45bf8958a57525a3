"""The segmentation application: see :mod:`.application` (the Application), :mod:`.task` and :mod:`.evaluation`."""

from voxelflow.applications.segmentation.application import SegmentationApplication

__all__ = ["SegmentationApplication"]
