"""The classification application: see :mod:`.application` (the Application), :mod:`.task` and :mod:`.evaluation`."""

from voxelflow.applications.classification.application import ClassificationApplication

__all__ = ["ClassificationApplication"]
