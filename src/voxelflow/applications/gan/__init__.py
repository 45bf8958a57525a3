"""The gan application: see :mod:`.application` (the Application), :mod:`.task` and :mod:`.evaluation`."""

from voxelflow.applications.gan.application import GanApplication

__all__ = ["GanApplication"]
