"""The regression application: see :mod:`.application` (the Application), :mod:`.task` and :mod:`.evaluation`."""

from voxelflow.applications.regression.application import RegressionApplication

__all__ = ["RegressionApplication"]
