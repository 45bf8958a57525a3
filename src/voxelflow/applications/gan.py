"""The gan application (being written: see the issue on the other four applications)."""

from __future__ import annotations

from voxelflow.applications.base import Application


class GanApplication(Application):
    """Placeholder until the module lands; refuses to build."""

    name = "gan"

    @classmethod
    def from_experiment(cls, experiment, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the gan application is not implemented yet")
