"""The regression application (being written: see the issue on the other four applications)."""

from __future__ import annotations

from voxelflow.applications.base import Application


class RegressionApplication(Application):
    """Placeholder until the module lands; refuses to build."""

    name = "regression"

    @classmethod
    def from_experiment(cls, experiment, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the regression application is not implemented yet")
